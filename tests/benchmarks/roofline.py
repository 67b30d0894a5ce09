"""How fast can this CPU embed at all? The fp32 ceiling the embedding benchmark is read against.

A BERT encoder's work is almost all matrix products. Per layer and padded token: the Q, K, V and
output projections (4 h^2 multiply-adds) and the feed-forward pair (2 h f); per layer and batch
row, the attention scores and their weighted sum (2 T^2 h, T the padded length). Two FLOPs per
multiply-add. Padding counts: it is computed like any token.

The ceiling is the FLOPs per text set against the GEMM rate this machine reaches: ONNX Runtime's
own MatMul (MLAS) on the encoder's shapes, timed here at each thread count. Nothing can embed
faster than its matrix products run alone, so ``rows/s / ceiling`` says how much is left.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quiver.resources.embedding.token_batches import DEFAULT_MAX_ROWS, DEFAULT_TOKEN_BUDGET, plan_batches


@dataclass(frozen=True)
class Encoder:
    layers: int
    hidden: int
    intermediate: int

    @classmethod
    def of(cls, model_dir: Path) -> Encoder:
        config = json.loads((Path(model_dir) / "config.json").read_text())
        return cls(config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"])

    def batch_flops(self, rows: int, length: int) -> float:
        h, f = self.hidden, self.intermediate
        per_token = 4 * h * h + 2 * h * f
        per_row = 2 * length * length * h
        return 2.0 * self.layers * (rows * length * per_token + rows * per_row)


def flops_token_sorted(encoder: Encoder, lengths: list[int]) -> float:
    """quiver's batches: token-sorted under a token budget, each padded to its longest text."""
    lengths_arr = np.asarray(lengths)
    return sum(
        encoder.batch_flops(len(b), int(lengths_arr[b].max()))
        for b in plan_batches(lengths, DEFAULT_TOKEN_BUDGET, DEFAULT_MAX_ROWS)
    )


def flops_char_sorted(encoder: Encoder, texts: list[str], lengths: list[int], batch_size: int = 32) -> float:
    """sentence-transformers' defaults: batches of 32 sorted by character length, longest first."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    lengths_arr = np.asarray(lengths)
    return sum(
        encoder.batch_flops(len(chunk), int(lengths_arr[chunk].max()))
        for chunk in (order[i : i + batch_size] for i in range(0, len(order), batch_size))
    )


def gemm_gflops(encoder: Encoder, threads: int, rows: int = DEFAULT_TOKEN_BUDGET, seconds: float = 1.0) -> float:
    """ONNX Runtime's fp32 MatMul on the encoder's shapes at ``threads``: GFLOP/s, FLOP-weighted
    over one layer's products (the median of a few timed loops per shape)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    h, f = encoder.hidden, encoder.intermediate
    shapes = [(h, h, 4), (h, f, 1), (f, h, 1)]  # (k, n, count per layer): QKV + output, FFN up, down
    total_flops, total_seconds = 0.0, 0.0
    rng = np.random.default_rng(0)
    for k, n, count in shapes:
        weight = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "W")
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["X", "W"], ["Y"])],
            "gemm",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["m", k])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["m", n])],
            [weight],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9  # what this onnxruntime reads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the embedder runs
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        x = rng.standard_normal((rows, k), dtype=np.float32)
        for _ in range(3):
            session.run(None, {"X": x})
        per_call = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(per_call) < 5:
            started = time.perf_counter()
            session.run(None, {"X": x})
            per_call.append(time.perf_counter() - started)
        total_flops += count * 2.0 * rows * k * n
        total_seconds += count * statistics.median(per_call)
    return total_flops / total_seconds / 1e9
