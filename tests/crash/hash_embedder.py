"""A deterministic stand-in for the model: a unit vector per text, the same in every process.

Its own module so the reader process can use it without importing DuckDB.
"""

from __future__ import annotations

import hashlib

import numpy as np

DIM = 16
MODEL = "hash-embedder-v1"


def embed(texts: list[str]) -> np.ndarray:
    out = np.empty((len(texts), DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        vector = np.random.default_rng(seed).normal(size=DIM)
        out[i] = vector / np.linalg.norm(vector)
    return out
