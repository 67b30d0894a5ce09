"""``<ds>/evaluation``: recall@10 and query latency against ef_search, as a chart (on demand).

Not in any job's selection: materialize it from the UI or the command line when you want the
picture. It measures the served index (snapshot graph plus a graph of the segments after it) on a
seeded sample of its own rows, against exact search, for a range of ef_search values, and writes
``<home>/quiver-reports/<ds>/recall_vs_ef_search.png``, shown inline in the materialization's metadata.
Needs matplotlib (``pip install 'quiver[charts]'``; ``make install`` installs it).
"""

import base64
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from quiver.resources import health
from quiver.resources.dagster_resources import IndexResource, key, tags
from quiver.resources.index import IndexReader
from quiver.resources.spec import DatasetSpec

CHART_NAME = "recall_vs_ef_search.png"
REPORTS_DIR = "quiver-reports"


class EvaluationConfig(dg.Config):
    """Run config of the evaluation asset (the launchpad shows it)."""

    sample: int = Field(default=300, ge=1, description="Rows used as queries (seeded).")
    ef_search: list[int] = Field(
        default=list(health.DEFAULT_SWEEP), description="ef_search values to measure (the served one is added)."
    )


def evaluation_key(spec: DatasetSpec) -> dg.AssetKey:
    return dg.AssetKey([spec.name, "evaluation"])


def report_path(home, dataset: str) -> Path:
    """Beside the index directories, never inside one (I7); the hyphen keeps it apart from any dataset name."""
    return Path(home) / REPORTS_DIR / dataset / CHART_NAME


def evaluation_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=evaluation_key(spec),
        deps=[key(spec, "snapshot")],
        group_name="evaluation",
        kinds={"usearch", "matplotlib"},
        tags=tags(spec),
        description=f"Recall@10 (against exact search) and query latency of {spec.name!r}'s HNSW index for a range "
        "of ef_search values, as a chart. On demand; reads only the index directory.",
    )
    def evaluation(
        context: dg.AssetExecutionContext, config: EvaluationConfig, index_store: IndexResource
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        reader = IndexReader(index_store.root(spec.name))
        current = reader.manifest.hnsw.ef_search
        points = health.ef_search_sweep(reader, [*config.ef_search, current], sample=config.sample, k=10)
        context.log.info("%s: %s", spec.name, ", ".join(f"ef {p.ef_search}: {p.recall:.4f}" for p in points))
        path = report_path(index_store.home, spec.name)
        title = (
            f"{spec.name}: {points[0].live_vectors:,} vectors, {points[0].queries} queries, m={reader.manifest.hnsw.m}"
        )
        health.render_sweep_chart(points, path, title, current_ef=current)
        image = base64.b64encode(path.read_bytes()).decode("ascii")
        at_current = next(p for p in points if p.ef_search == current)
        rows = [[p.ef_search, f"{p.recall:.4f}", f"{p.latency_ms_p50:.3f}", f"{p.latency_ms_p95:.3f}"] for p in points]
        table = health.md_table(["ef_search", "recall@10", "p50 ms", "p95 ms"], rows)
        return dg.MaterializeResult(
            metadata={
                "chart": dg.MetadataValue.md(f"![recall@10 and latency vs ef_search](data:image/png;base64,{image})"),
                "chart_path": dg.MetadataValue.path(str(path)),
                "results": dg.MetadataValue.md(table),
                "points": dg.MetadataValue.json(
                    [
                        {
                            "ef_search": p.ef_search,
                            "recall_at_10": p.recall,
                            "p50_ms": p.latency_ms_p50,
                            "p95_ms": p.latency_ms_p95,
                        }
                        for p in points
                    ]
                ),
                "ef_search": current,
                "recall_at_10": at_current.recall,
                "latency_ms_p50": round(at_current.latency_ms_p50, 4),
                "sample_size": at_current.queries,
                "vectors": at_current.live_vectors,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )

    return evaluation
