"""Embedding: text -> unit vectors, offline. No Dagster.

``model`` (which files, which identity), ``device`` (backend, device, threads), ``embedder`` (the
loaded model, one per process), ``onnx_export`` and ``onnx_backend`` (the default CPU path),
``token_batches`` (token-sorted batches for either backend), ``progress`` (rows/s and ETA lines).
Importing this package loads neither torch nor ONNX Runtime: they load with the first model.
"""

from quiver.resources.embedding.device import BACKENDS, available_cpus, choose_backend, resolve_threads
from quiver.resources.embedding.embedder import ENV_CACHE, Embedder, default_cache_dir, get_embedder
from quiver.resources.embedding.model import ModelNotFoundError, model_identity, resolve_model_path, split_identity
from quiver.resources.embedding.progress import ProgressLog
from quiver.resources.spec import DEFAULT_MODEL, QUANTIZATIONS

__all__ = [
    "BACKENDS", "DEFAULT_MODEL", "ENV_CACHE", "QUANTIZATIONS", "Embedder", "ModelNotFoundError", "ProgressLog",
    "available_cpus", "choose_backend", "default_cache_dir", "get_embedder", "model_identity",
    "resolve_model_path", "resolve_threads", "split_identity",
]
