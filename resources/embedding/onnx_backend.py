"""One ONNX Runtime session on CPU that turns token batches into sentence embeddings. No torch.

The exported graph (see :mod:`quiver.resources.embedding.onnx_export`) is the whole sentence-transformers model:
transformer, the model's own pooling and, when the model has one, its normalisation. Its inputs
are the tokenizer's arrays (``input_ids``, ``attention_mask`` and, for BERT-like models,
``token_type_ids``), int64, shape (batch, tokens); its one output is ``sentence_embedding``
(batch, dim) float32. Importing onnxruntime takes tens of milliseconds, torch seconds: a query
process that only embeds a few texts never needs torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quiver.resources.embedding.token_batches import TokenBatch, token_batches

OUTPUT = "sentence_embedding"


class OnnxEncoder:
    """A session with ``threads`` intra-op threads (sequential execution, one inter-op thread).

    Spinning is off: with another busy process on the machine, threads that spin-wait between
    operators steal the cycles of the thread doing the work.
    """

    def __init__(self, model_path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: no optimizer chatter on terminals
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.inputs = tuple(i.name for i in self.session.get_inputs())
        self.threads = threads

    def run(self, batch: TokenBatch) -> np.ndarray:
        arrays = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        (vectors,) = self.session.run([OUTPUT], {name: arrays[name] for name in self.inputs})
        return np.asarray(vectors, dtype=np.float32)


def encode_texts(encoder: OnnxEncoder, tokenizer, texts: list[str]) -> np.ndarray:
    """Unit vectors for ``texts`` in input order, token-sorted batches (for export checks)."""
    out = np.empty((len(texts), 0), dtype=np.float32)
    for batch in token_batches(tokenizer, texts):
        vectors = encoder.run(batch)
        if out.shape[1] == 0:
            out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        out[batch.rows] = vectors
    return normalize(out)


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (rows of zeros stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
