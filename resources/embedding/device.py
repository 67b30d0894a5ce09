"""Where embedding runs: the backend (ONNX Runtime or torch), the device and the threads. No Dagster."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx", "torch")
ENV_THREADS, ENV_BACKEND = "QUIVER_EMBED_THREADS", "QUIVER_EMBED_BACKEND"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not the machine's core count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_threads(requested: int | None = None) -> int:
    """``requested``, else ``$QUIVER_EMBED_THREADS``, else all available CPUs; never more than those."""
    cpus = available_cpus()
    if requested is None and os.environ.get(ENV_THREADS, "").strip():
        raw = os.environ[ENV_THREADS].strip()
        try:
            requested = int(raw)
        except ValueError:
            raise ValueError(f"{ENV_THREADS}={raw!r} is not a whole number; set it to 1..{cpus} or unset it") from None
    if requested is None:
        return cpus
    if requested < 1:
        raise ValueError(f"embedding threads must be at least 1 (got {requested}); this process may use {cpus} CPUs")
    if requested > cpus:
        log.warning(
            "asked for %d embedding threads, but this process may run on %d CPUs; using %d", requested, cpus, cpus
        )
    return min(requested, cpus)


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _gpu_present() -> bool:
    """A CUDA GPU torch can use; torch is imported only if the NVIDIA driver is there at all."""
    if not (Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()):
        return False
    return pick_device() == "cuda"


def choose_backend(backend: str | None, device: str | None, quantize: str | None) -> tuple[str, str]:
    """(backend, device) to run on; see the module doc."""
    backend = (backend or os.environ.get(ENV_BACKEND) or "auto").strip().lower()
    if backend not in BACKENDS:
        raise ValueError(f"embedding backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    gpu = device is not None and device != "cpu"
    if quantize is not None:
        if backend == "torch" or gpu:
            raise ValueError(
                f"{quantize} models run on ONNX Runtime on CPU only (got backend {backend!r}, device {device!r}); "
                f"use backend onnx/auto on CPU, or drop `quantize: {quantize}`"
            )
        return "onnx", "cpu"
    if backend == "onnx":
        if gpu:
            raise ValueError(f"the onnx backend runs on CPU (got device {device!r}); use backend torch for a GPU")
        return "onnx", "cpu"
    if backend == "torch":
        return "torch", device or pick_device()
    if device is not None:
        return ("torch", device) if gpu else ("onnx", "cpu")
    return ("torch", "cuda") if _gpu_present() else ("onnx", "cpu")
