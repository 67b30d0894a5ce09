"""A process that only answers vector queries imports neither the validated spec (pydantic) nor
the embedding code: its first answer waits on every import it makes (make bench: cold start)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

HEAVY_PACKAGES = ("pydantic", "torch", "onnxruntime", "sentence_transformers", "tokenizers")
HEAVY_MODULES = ("quiver.resources.spec", "quiver.resources.embedding")


def test_a_vector_query_loads_no_spec_validation_and_no_model(tmp_path, kit):
    dim = 8
    store = kit.new_store(tmp_path / "products", kit.make_identity(dim=dim))
    work = kit.Workload(5, dim)
    store.append_segment(*work.batch(inserts=50))
    store.take_snapshot()
    spec = tmp_path / "datasets.yaml"
    spec.write_text("datasets:\n  - name: products\n    from: products.parquet\n    primary_key: id\n")
    probe = (
        "import json, sys\n"
        "from quiver import search\n"
        f"table = search('products', [0.5] * {dim}, k=3)\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY_PACKAGES!r}\n"
        f"    or any(m == h or m.startswith(h + '.') for h in {HEAVY_MODULES!r}))\n"
        "print(json.dumps({'rows': table.num_rows, 'columns': table.column_names, 'heavy': heavy}))\n"
    )
    env = {**os.environ, "QUIVER_HOME": str(tmp_path), "QUIVER_DATASETS": str(spec)}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["rows"] == 3 and out["columns"][:3] == ["id", "score", "distance"]
    assert out["heavy"] == [], "a vector query imported the spec's validation or the model's code"


def test_the_spec_is_validated_when_a_query_needs_it(tmp_path, kit):
    """A vector query reads only the spec's dataset names; the chunk column, cut from the embedded
    columns, needs the validated spec, so that query reads it and names what is wrong in it."""
    from quiver.resources.search import Searcher
    from quiver.resources.spec_file import SpecError

    store = kit.new_store(tmp_path / "products", kit.make_identity(dim=8))
    store.append_segment(*kit.Workload(6, 8).batch(inserts=20))
    spec = tmp_path / "datasets.yaml"
    spec.write_text(
        "datasets:\n  - name: products\n    from: products.parquet\n    primary_key: id\n"
        "    embeddings:\n      column: name\n    vectors:\n      metric: manhattan\n"
    )
    searcher = Searcher.for_spec_file(tmp_path, spec)
    assert searcher.search("products", np.ones(8, np.float32), k=2).num_rows == 2
    with pytest.raises(SpecError, match="manhattan"):
        searcher.search("products", np.ones(8, np.float32), k=2, columns=["chunk"])

    spec.write_text(spec.read_text().replace("manhattan", "cosine"))
    fixed = Searcher.for_spec_file(tmp_path, spec)
    assert fixed.search("products", np.ones(8, np.float32), k=2, columns=["chunk"]).num_rows == 2
    assert fixed.texts["products"].columns == ("name",)
