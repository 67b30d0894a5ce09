"""The ONNX backend: equal to sentence-transformers, cached once, no torch at query time, int8 gate.

One export per test session in a temp QUIVER_HOME (``home`` fixture); the subprocess tests reuse
it, so they prove that a cached export is used without torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from quiver.resources.embedding import (
    DEFAULT_MODEL,
    Embedder,
    available_cpus,
    choose_backend,
    get_embedder,
    onnx_export,
    resolve_model_path,
    resolve_threads,
    split_identity,
)
from quiver.resources.index.commitlog import OP_UPSERT
from tests.conftest import ROOT

MODEL_DIR = resolve_model_path(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("quiver-home")


@pytest.fixture(scope="module")
def onnx_embedder(home) -> Embedder:
    return Embedder(DEFAULT_MODEL, backend="onnx", cache_dir=home / "models")


@pytest.fixture(scope="module")
def texts(sample_table) -> list[str]:
    rng = np.random.default_rng(7)
    rows = sample_table.take(rng.choice(sample_table.num_rows, 400, replace=False)).to_pylist()
    short = [f"{r['package']}: {r['short_description']}" for r in rows]
    long = onnx_export.sample_texts()[-100:]  # long Debian descriptions, 80-200 tokens
    odd = ["", "日本語のテキスト、記号 ★ ✓", "word " * 400, "x"]
    return short + long + odd


@pytest.fixture(scope="module")
def st_vectors(texts) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(MODEL_DIR), device="cpu")
    return st.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True)


def test_onnx_vectors_equal_sentence_transformers(onnx_embedder, texts, st_vectors):
    got = onnx_embedder.embed(texts)
    assert got.dtype == np.float32 and got.shape == (len(texts), 384)
    cosines = np.sum(got * st_vectors, axis=1)
    assert cosines.mean() >= 0.9999
    assert cosines.min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_torch_backend_matches_too_and_keeps_the_identity(onnx_embedder, texts, st_vectors):
    torch_embedder = Embedder(DEFAULT_MODEL, device="cpu", backend="torch")
    got = torch_embedder.embed(texts)
    assert np.sum(got * st_vectors, axis=1).mean() >= 0.9999
    assert torch_embedder.model == onnx_embedder.model == DEFAULT_MODEL
    assert torch_embedder.dim == onnx_embedder.dim == 384


@pytest.mark.parametrize("seed", [3])
def test_results_come_back_in_input_order(onnx_embedder, texts, seed):
    order = np.random.default_rng(seed).permutation(len(texts))
    shuffled = [texts[i] for i in order]
    whole = onnx_embedder.embed(texts)
    np.testing.assert_allclose(onnx_embedder.embed(shuffled), whole[order], atol=1e-5)
    one_by_one = np.vstack([onnx_embedder.embed([texts[i]]) for i in order[:20]])
    np.testing.assert_allclose(one_by_one, whole[order[:20]], atol=1e-5)


def test_progress_is_reported_per_batch(onnx_embedder, texts):
    calls = []
    onnx_embedder.embed(texts, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (len(texts), len(texts))
    assert len(calls) > 1 and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert onnx_embedder.embed([]).shape == (0, 384)


def test_export_cache_layout_and_reuse(onnx_embedder, home):
    folder = onnx_export.export_dir(home / "models", MODEL_DIR, "fp32")
    meta = json.loads((folder / onnx_export.EXPORT_FILE).read_text())
    assert meta["format"] == 1 and meta["variant"] == "fp32" and meta["dim"] == 384
    assert meta["max_seq_length"] == 256
    assert meta["model_fingerprint"] == onnx_export.fingerprint(MODEL_DIR)
    assert meta["fidelity"]["mean_cosine"] >= onnx_export.FP32_MIN_COSINE
    assert folder.parent.name.startswith("model-")
    assert not list((home / "models").glob(".tmp-*"))
    again = onnx_export.ensure_export(home / "models", MODEL_DIR, "fp32")
    assert again.path == folder / onnx_export.GRAPH_FILE


def test_a_damaged_export_is_not_served(home, tmp_path):
    cache = tmp_path / "models"
    folder = onnx_export.export_dir(home / "models", MODEL_DIR, "fp32")
    copy = onnx_export.export_dir(cache, MODEL_DIR, "fp32")
    copy.mkdir(parents=True)
    for name in (onnx_export.GRAPH_FILE, onnx_export.EXPORT_FILE):
        (copy / name).write_bytes((folder / name).read_bytes())
    assert onnx_export.load_export(cache, MODEL_DIR) is not None
    graph = bytearray((copy / onnx_export.GRAPH_FILE).read_bytes())
    graph[len(graph) // 2] ^= 0xFF  # one flipped weight byte: same size, other checksum
    (copy / onnx_export.GRAPH_FILE).write_bytes(bytes(graph))
    assert onnx_export.load_export(cache, MODEL_DIR) is None


def test_the_fingerprint_follows_the_model_files(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "README.md").write_text("docs")
    first = onnx_export.fingerprint(model)
    (model / "README.md").write_text("other docs")
    assert onnx_export.fingerprint(model) == first
    (model / "config.json").write_text('{"hidden_size": 1}')
    assert onnx_export.fingerprint(model) != first


def _run_python(code: str, home) -> str:
    env = {**os.environ, "QUIVER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_embedding_with_a_cached_export_never_imports_torch(onnx_embedder, home):
    out = _run_python(
        """
        import sys
        from quiver.resources.embedding import get_embedder
        embedder = get_embedder()
        vector = embedder.embed(["a text query"])[0]
        print(embedder.backend, vector.shape[0], "torch" in sys.modules, "sentence_transformers" in sys.modules)
        """,
        home,
    )
    assert out == "onnx 384 False False"


def test_a_text_search_never_imports_torch(onnx_embedder, home, kit):
    store = kit.new_store(home / "docs", kit.make_identity(dim=384, model=DEFAULT_MODEL))
    names = ["a text editor for programmers", "a game of chess", "a library for image decoding"]
    vectors = onnx_embedder.embed(names)
    records = [kit.Record(i + 1, OP_UPSERT, kit.key_of(i), i, vectors[i], names[i]) for i in range(len(names))]
    store.append_segment(kit.changes_table(records, 384), 1, len(names))
    out = _run_python(
        f"""
        import sys
        from pathlib import Path
        from quiver.resources.search import Searcher
        table = Searcher(Path({str(home)!r})).search("docs", "chess board game", k=1, columns=["name"])
        print(table.column("name")[0].as_py(), "torch" in sys.modules)
        """,
        home,
    )
    assert out == "a game of chess False"


def test_threads_follow_the_affinity_mask(monkeypatch):
    cpus = available_cpus()
    monkeypatch.delenv("QUIVER_EMBED_THREADS", raising=False)
    assert resolve_threads() == cpus
    assert resolve_threads(1) == 1
    assert resolve_threads(cpus + 8) == cpus  # never more threads than CPUs
    monkeypatch.setenv("QUIVER_EMBED_THREADS", "1")
    assert resolve_threads() == 1
    assert resolve_threads(cpus) == cpus  # the setting wins over the environment
    monkeypatch.setenv("QUIVER_EMBED_THREADS", "many")
    with pytest.raises(ValueError, match="QUIVER_EMBED_THREADS='many'"):
        resolve_threads()
    with pytest.raises(ValueError, match="at least 1"):
        resolve_threads(0)


def test_backend_choice(monkeypatch):
    monkeypatch.delenv("QUIVER_EMBED_BACKEND", raising=False)
    assert choose_backend("onnx", None, None) == ("onnx", "cpu")
    assert choose_backend("auto", "cpu", None) == ("onnx", "cpu")
    assert choose_backend("auto", "cuda:0", None) == ("torch", "cuda:0")
    assert choose_backend("torch", "cpu", None) == ("torch", "cpu")
    assert choose_backend("auto", None, "int8") == ("onnx", "cpu")
    monkeypatch.setenv("QUIVER_EMBED_BACKEND", "torch")
    assert choose_backend(None, "cpu", None) == ("torch", "cpu")
    with pytest.raises(ValueError, match="one of auto, onnx, torch"):
        choose_backend("tensorrt", None, None)
    with pytest.raises(ValueError, match="ONNX Runtime on CPU only"):
        choose_backend("torch", "cpu", "int8")
    with pytest.raises(ValueError, match="runs on CPU"):
        choose_backend("onnx", "cuda", None)


def test_identity_parsing():
    assert split_identity("all-MiniLM-L6-v2+int8") == ("all-MiniLM-L6-v2", "int8")
    assert split_identity("/models/my+model") == ("/models/my+model", None)


def test_int8_passes_its_gate_and_is_another_identity(onnx_embedder, home, texts):
    int8 = get_embedder(f"{DEFAULT_MODEL}+int8", cache_dir=home / "models")
    assert int8.model == f"{DEFAULT_MODEL}+int8" and int8.backend == "onnx" and int8.dim == 384
    meta = json.loads((onnx_export.export_dir(home / "models", MODEL_DIR, "int8") / "EXPORT.json").read_text())
    assert meta["fidelity"]["mean_cosine"] >= 0.99 and meta["fidelity"]["topk_overlap"] >= 0.9
    fidelity = onnx_export.measure_fidelity(onnx_embedder.embed(texts[:-4]), int8.embed(texts[:-4]))
    assert fidelity.mean_cosine >= 0.99
    assert fidelity.topk_overlap >= 0.85  # a different sample from the gate's; same order of figure


def test_int8_below_the_bar_is_refused_with_the_figures(onnx_embedder, home, tmp_path, monkeypatch):
    cache = tmp_path / "models"
    fp32 = onnx_export.export_dir(home / "models", MODEL_DIR, "fp32")
    copy = onnx_export.export_dir(cache, MODEL_DIR, "fp32")
    copy.mkdir(parents=True)
    for name in (onnx_export.GRAPH_FILE, onnx_export.EXPORT_FILE):
        (copy / name).write_bytes((fp32 / name).read_bytes())
    monkeypatch.setattr(onnx_export, "INT8_MIN_OVERLAP", 0.999)
    sample = onnx_export.sample_texts()[:120]
    with pytest.raises(
        onnx_export.ExportFidelityError, match=r"refused: on 120 sample texts, mean cosine to fp32 0\.99"
    ):
        onnx_export.ensure_export(cache, MODEL_DIR, "int8", sample=sample)
    assert not onnx_export.export_dir(cache, MODEL_DIR, "int8").exists()
    assert not list(cache.glob(".tmp-*"))


def test_the_embedding_modules_stay_free_of_dagster_and_torch_at_import(tmp_path):
    out = _run_python(
        """
        import sys
        import quiver.resources.embedding, quiver.resources.embedding.onnx_export, quiver.resources.embedding.onnx_backend
        import quiver.resources.embedding.token_batches, quiver.resources.embedding.progress
        print(sorted(m for m in ("dagster", "torch", "sentence_transformers", "transformers") if m in sys.modules))
        """,
        tmp_path,
    )
    assert out == "[]"
