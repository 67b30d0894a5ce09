"""ONNX exports of sentence-transformers models, made once offline and cached; optional int8.

An export is the whole sentence-transformers pipeline (transformer, the model's own pooling and,
if the model has one, its normalisation) traced with ``torch.onnx.export`` into one graph that
ONNX Runtime runs on CPU (:mod:`quiver.resources.embedding.onnx_backend`). Making it needs torch and a few seconds;
using it needs neither. Exports are made on first use by an embedder, never at import.

Cache layout (under ``<QUIVER_HOME>/models`` unless the caller gives another root)::

    <root>/<model dir name>-<fingerprint>/     fingerprint: xxh3-128 (hex) of the model's files
      fp32/model.onnx   fp32/EXPORT.json
      int8/model.onnx   int8/EXPORT.json      only when int8 was asked for and passed its gate

The fingerprint covers every file of the model directory (relative path, size, bytes) except
README*, .gitattributes and the folders other exporters write there (onnx/, openvino/), so a
changed model gets a new folder and a stale export is never used. Each variant folder is built
under a temp name beside it and published by ``files.atomic_write`` (every file fsynced, renamed
into place whole, the folder fsynced); a second process racing to make the same export loses the
rename and uses the winner's. Temp folders older than an hour (a crashed export) are removed when
an export is made.

``EXPORT.json`` (format 1)::

    format           1
    variant          "fp32" | "int8"
    model_fingerprint, model_source (the directory it was made from)
    file, bytes, xxh3_128   the graph file, its size and checksum
    dim, max_seq_length, inputs (graph input names, in order), output ("sentence_embedding")
    fidelity         figures of the check run at export (see below)
    versions         torch, onnx, onnxruntime, sentence-transformers that made it
    created_at, export_seconds

A reader checks ``format``, ``variant``, the fingerprint, and the graph file's size and checksum
(xxh3: ~20 ms for 90 MB); anything else is a missing export (made again), never served.

Fidelity at export, on a sample of real texts (``fidelity_sample.txt`` beside this module: 360
short and 240 long Debian package descriptions; or the caller's): the fp32 export must match
sentence-transformers' own vectors on every third text, mean cosine >= 0.9999 (so the backend does
not change the model identity). int8 (``quantize_dynamic``: per-channel QInt8 weights, MatMuls
only, those fed by an activation kept fp32) must keep mean cosine to fp32 >= 0.99 and top-10
neighbour overlap >= 0.9 on the whole sample. An export that misses its bar is refused with the
figures (:class:`ExportFidelityError`) and nothing is cached.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import xxhash

from quiver.resources.embedding.onnx_backend import OnnxEncoder, encode_texts
from quiver.resources.embedding.token_batches import load_tokenizer
from quiver.resources.files import TEMP_MARKER, atomic_write, remove_path

log = logging.getLogger(__name__)

FORMAT = 1
VARIANTS = ("fp32", "int8")
EXPORT_FILE = "EXPORT.json"
GRAPH_FILE = "model.onnx"
OPSET = 17
FP32_MIN_COSINE = 0.9999
INT8_MIN_COSINE = 0.99
INT8_MIN_OVERLAP = 0.9
NEIGHBOURS = 10
SAMPLE_FILE = Path(__file__).with_name("fidelity_sample.txt")
_SKIP_FILES = {".gitattributes"}
_SKIP_DIRS = {"onnx", "openvino", ".cache", ".git"}
_FINGERPRINTS: dict[tuple, str] = {}


class ExportFidelityError(ValueError):
    """An export whose vectors are too far from the reference; it is not cached."""


@dataclass(frozen=True)
class Fidelity:
    """How close ``candidate`` vectors are to ``reference`` on the same texts."""

    texts: int
    mean_cosine: float
    min_cosine: float
    topk_overlap: float  # mean share of each text's top-10 neighbours (in the sample) kept


@dataclass(frozen=True)
class OnnxExport:
    """A usable export: the graph and what the embedder needs to run it."""

    path: Path
    variant: str
    dim: int
    max_seq_length: int
    inputs: tuple[str, ...]
    fidelity: dict


def fingerprint(model_dir: Path) -> str:
    """xxh3-128 over the model's files: relative path, size and bytes, in sorted order.

    Memoized per process on the files' (path, size, mtime): a query process hashes once.
    """
    model_dir = Path(model_dir)
    files = []
    for path in sorted(model_dir.rglob("*")):
        rel = path.relative_to(model_dir)
        skipped = rel.parts[0] in _SKIP_DIRS or path.name in _SKIP_FILES or path.name.startswith("README")
        if path.is_file() and not skipped:
            stat = path.stat()
            files.append((rel.as_posix(), stat.st_size, stat.st_mtime_ns))
    key = (str(model_dir.resolve()), tuple(files))
    if key not in _FINGERPRINTS:
        digest = xxhash.xxh3_128()
        for rel, size, _ in files:
            digest.update(f"{rel}\0{size}\0".encode())
            digest.update(bytes.fromhex(_file_hash(model_dir / rel)))
        _FINGERPRINTS[key] = digest.hexdigest()
    return _FINGERPRINTS[key]


def export_dir(root: Path, model_dir: Path, variant: str) -> Path:
    return Path(root) / f"{Path(model_dir).name}-{fingerprint(model_dir)[:16]}" / variant


def load_export(root: Path, model_dir: Path, variant: str = "fp32") -> OnnxExport | None:
    """The cached export of ``model_dir`` if it is there and whole, else None (see the module doc)."""
    folder = export_dir(root, model_dir, variant)
    try:
        meta = json.loads((folder / EXPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    graph = folder / meta.get("file", GRAPH_FILE)
    expected = (FORMAT, variant, fingerprint(model_dir))
    if (meta.get("format"), meta.get("variant"), meta.get("model_fingerprint")) != expected:
        log.warning("ignoring the export in %s: it was made for another model or format", folder)
        return None
    if not graph.is_file() or graph.stat().st_size != meta.get("bytes") or _file_hash(graph) != meta.get("xxh3_128"):
        log.warning("ignoring the export in %s: %s is missing or damaged; it will be made again", folder, graph.name)
        return None
    return OnnxExport(
        path=graph,
        variant=variant,
        dim=int(meta["dim"]),
        max_seq_length=int(meta["max_seq_length"]),
        inputs=tuple(meta["inputs"]),
        fidelity=meta.get("fidelity", {}),
    )


def ensure_export(
    root: Path, model_dir: Path, variant: str = "fp32", threads: int = 1, sample: list[str] | None = None
) -> OnnxExport:
    """The cached export, made now (torch, seconds) if missing. int8 needs fp32 and its gate."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown export variant {variant!r}; one of {', '.join(VARIANTS)}")
    found = load_export(root, model_dir, variant)
    if found is not None:
        return found
    if variant == "fp32":
        return _make_fp32(Path(root), Path(model_dir), threads, sample)
    fp32 = ensure_export(root, model_dir, "fp32", threads, sample)
    return _make_int8(Path(root), Path(model_dir), fp32, threads, sample)


def measure_fidelity(reference: np.ndarray, candidate: np.ndarray, k: int = NEIGHBOURS) -> Fidelity:
    """Cosines row by row, and the overlap of each row's top-k neighbours among the other rows."""
    ref = _unit(reference)
    cand = _unit(candidate)
    cosines = np.sum(ref * cand, axis=1)
    k = min(k, len(ref) - 1)
    overlap = 1.0
    if k > 0:
        overlap = float(np.mean([len(a & b) / k for a, b in zip(_neighbours(ref, k), _neighbours(cand, k))]))
    return Fidelity(len(ref), float(cosines.mean()), float(cosines.min()), overlap)


def sample_texts() -> list[str]:
    """The packaged fidelity sample: one text per line."""
    return [line for line in SAMPLE_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def _neighbours(vectors: np.ndarray, k: int) -> list[set[int]]:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    return [set(row.tolist()) for row in top]


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _file_hash(path: Path) -> str:
    digest = xxhash.xxh3_128()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _make_fp32(root: Path, model_dir: Path, threads: int, sample: list[str] | None) -> OnnxExport:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    log.info("exporting %s to ONNX (once per model; needs torch)", model_dir)
    st = SentenceTransformer(str(model_dir), device="cpu").eval()
    example = st.preprocess(["an example text", "a second, somewhat longer example text"])  # tokenize, as ST 6 names it
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in example]

    class _Whole(torch.nn.Module):  # positional tensors in, the model's sentence embedding out
        def __init__(self):
            super().__init__()
            self.st = st

        def forward(self, *tensors):
            return self.st(dict(zip(names, tensors)))["sentence_embedding"]

    def build(tmp: Path) -> None:
        tmp.mkdir()
        graph = tmp / GRAPH_FILE
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter
            torch.onnx.export(
                _Whole(),
                tuple(example[n] for n in names),
                str(graph),
                input_names=names,
                output_names=["sentence_embedding"],
                dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names}, "sentence_embedding": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        texts = sample or sample_texts()[::3]  # 200 short and long texts: enough to catch a bad trace
        reference = st.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
        candidate = _run(graph, model_dir, st.max_seq_length, threads, texts)
        fidelity = measure_fidelity(reference, candidate)
        if fidelity.mean_cosine < FP32_MIN_COSINE:
            raise ExportFidelityError(
                f"the ONNX export of {model_dir} does not reproduce sentence-transformers' vectors: mean cosine "
                f"{fidelity.mean_cosine:.6f} (min {fidelity.min_cosine:.6f}) on {fidelity.texts} texts, needs >= "
                f"{FP32_MIN_COSINE}; use the torch backend for this model (embedder backend: torch)"
            )
        dim = int(reference.shape[1])
        meta = _meta("fp32", model_dir, graph, dim, st.max_seq_length, names, fidelity, started)
        (tmp / EXPORT_FILE).write_text(json.dumps(meta, indent=2) + "\n")  # last: a folder without it is no export

    return _publish(root, model_dir, "fp32", build)


def _make_int8(root: Path, model_dir: Path, fp32: OnnxExport, threads: int, sample: list[str] | None) -> OnnxExport:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    started = time.perf_counter()
    log.info("quantizing the ONNX export of %s to int8 (dynamic, per-channel)", model_dir)
    def build(tmp: Path) -> None:
        tmp.mkdir()
        graph = tmp / GRAPH_FILE
        with _quiet_quantizer():
            quantize_dynamic(
                fp32.path,
                graph,
                per_channel=True,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=_after_activation(fp32.path),
            )
        texts = sample or sample_texts()
        reference = _run(fp32.path, model_dir, fp32.max_seq_length, threads, texts)
        candidate = _run(graph, model_dir, fp32.max_seq_length, threads, texts)
        fidelity = measure_fidelity(reference, candidate)
        if fidelity.mean_cosine < INT8_MIN_COSINE or fidelity.topk_overlap < INT8_MIN_OVERLAP:
            raise ExportFidelityError(
                f"int8 quantization of {model_dir} refused: on {fidelity.texts} sample texts, mean cosine to fp32 "
                f"{fidelity.mean_cosine:.4f} (needs >= {INT8_MIN_COSINE}), top-{NEIGHBOURS} neighbour overlap "
                f"{fidelity.topk_overlap:.3f} (needs >= {INT8_MIN_OVERLAP}); remove `quantize: int8` from the "
                "dataset's embeddings block to embed in fp32"
            )
        meta = _meta("int8", model_dir, graph, fp32.dim, fp32.max_seq_length, list(fp32.inputs), fidelity, started)
        (tmp / EXPORT_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    return _publish(root, model_dir, "int8", build)


class _quiet_quantizer(logging.Filter):
    """Drops onnxruntime.quantization's root-logger advice ("consider pre-processing") while it runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname or "quantization" not in record.pathname

    def __enter__(self) -> None:
        logging.getLogger().addFilter(self)

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeFilter(self)


def _after_activation(graph: Path) -> list[str]:
    """MatMul nodes fed by an activation (the FFN down-projections): they stay fp32.

    Dynamic quantization quantizes activations per tensor; the outputs of GELU carry outliers that
    per-tensor int8 flattens. Measured on all-MiniLM-L6-v2 and 600 sample texts: quantizing every
    MatMul gives mean cosine 0.993 and top-10 overlap 0.888 (below the gate); keeping these six in
    fp32 gives 0.997 and 0.92.
    """
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    activations = {"Mul", "Gelu", "FastGelu", "BiasGelu", "Relu", "Tanh", "Sigmoid", "Erf"}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and producer.get(n.input[0]) in activations]


def _run(graph: Path, model_dir: Path, max_seq_length: int, threads: int, texts: list[str]) -> np.ndarray:
    return encode_texts(OnnxEncoder(graph, threads), load_tokenizer(model_dir, max_seq_length), texts)


def _meta(variant, model_dir, graph, dim, max_seq_length, inputs, fidelity: Fidelity, started) -> dict:
    return {
        "format": FORMAT,
        "variant": variant,
        "model_fingerprint": fingerprint(model_dir),
        "model_source": str(model_dir),
        "file": GRAPH_FILE,
        "bytes": graph.stat().st_size,
        "xxh3_128": _file_hash(graph),
        "dim": dim,
        "max_seq_length": int(max_seq_length),
        "inputs": list(inputs),
        "output": "sentence_embedding",
        "fidelity": asdict(fidelity),
        "versions": {name: _version(name) for name in ("torch", "onnx", "onnxruntime", "sentence-transformers")},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "export_seconds": round(time.perf_counter() - started, 2),
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _publish(root: Path, model_dir: Path, variant: str, build: Callable[[Path], None]) -> OnnxExport:
    """``build`` the export into a temp folder beside its place, publish it with the project's one
    atomic-publish helper (fsync every file, rename, fsync the folder); the first writer wins."""
    target = export_dir(root, model_dir, variant)
    target.parent.mkdir(parents=True, exist_ok=True)
    for old in target.parent.glob(f"{TEMP_MARKER}*"):  # leftovers of a crashed export (not a running one)
        if time.time() - old.stat().st_mtime > 3600:
            remove_path(old)
    started = time.perf_counter()
    try:
        atomic_write(target, build, label="onnx_export")
    except OSError:  # the folder is there: another process published first (FileExistsError, ENOTEMPTY)
        if not (target / EXPORT_FILE).exists():
            raise
        log.info("another process made %s first; using it", target)
    else:
        log.info("exported %s (%s) to %s in %.1fs", model_dir.name, variant, target, time.perf_counter() - started)
    found = load_export(root, model_dir, variant)
    if found is None:
        raise RuntimeError(f"the export just written to {target} does not read back; remove the folder and retry")
    return found
