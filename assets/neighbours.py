"""``<ds>/neighbours``: the nearest neighbours of the newest rows, through the ``search`` resource.

An example of a downstream asset that queries the served index (on demand, in no job): it reads
the vectors of the rows changed last (highest ``_seq``) from the embedded table, asks the search
resource for their neighbours in one batch, drops each row's match with itself, and shows the
result as a markdown table in the materialization's metadata.
"""

import time

import dagster as dg
import numpy as np
import pyarrow as pa
from dagster_duckdb import DuckDBResource
from pydantic import Field

from quiver.resources.dagster_resources import WRITER_POOL, SearchResource, key, open_connection, tags
from quiver.resources.warehouse import layout_for, q


class NeighboursConfig(dg.Config):
    """Run config of the neighbours asset (the launchpad shows it)."""

    rows: int = Field(default=5, ge=1, le=1000, description="How many of the newest rows get neighbours.")
    k: int = Field(default=5, ge=1, le=100, description="Neighbours per row (the row itself not counted).")
    where: str | None = Field(default=None, description="SQL predicate over served columns the neighbours must match.")


def neighbours_key(dataset: str) -> dg.AssetKey:
    return dg.AssetKey([dataset, "neighbours"])


def newest_vectors(conn, spec, rows: int) -> tuple[list, np.ndarray]:
    """Primary keys and vectors of the ``rows`` most recently changed rows, newest first."""
    table = layout_for(spec)
    found = conn.execute(
        f"SELECT {q(spec.primary_key)} AS pk, _vector FROM {table.embeddings} ORDER BY _seq DESC LIMIT ?", [rows]
    ).to_arrow_table()
    vectors = found.column("_vector").combine_chunks()
    dim = vectors.type.list_size if found.num_rows else 0
    return found.column("pk").to_pylist(), vectors.flatten().to_numpy().reshape(found.num_rows, dim)


def pair_up(hits: pa.Table, pks: list, pk: str, k: int) -> list[dict]:
    """One record per (row, neighbour), best first, without the row itself."""
    pairs, taken = [], [0] * len(pks)
    for hit in hits.to_pylist():
        row = hit.pop("query")
        if hit[pk] == pks[row] or taken[row] >= k:
            continue
        taken[row] += 1
        pairs.append({"row": pks[row], "rank": taken[row], **hit})
    return pairs


def preview(pairs: list[dict], pk: str, label: str | None) -> str:
    """A markdown table: row | rank | neighbour | score (| its label column)."""
    head = ["row", "rank", "neighbour", "score", *([label] if label else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for p in pairs:
        cells = [p["row"], p["rank"], p[pk], f"{p['score']:.4f}", *([p[label]] if label else [])]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def neighbours_asset(spec) -> dg.AssetsDefinition:
    @dg.asset(
        key=neighbours_key(spec.name),
        deps=[key(spec, "index")],
        group_name="serving",
        kinds={"duckdb", "usearch"},
        tags=tags(spec),
        pool=WRITER_POOL,  # it reads the DuckDB file, so it waits for the writer like every reader of it
        description=f"Nearest neighbours of the newest rows of {spec.name!r}, answered by the search resource "
        "from the served index (snapshot + segments). On demand; an example of a downstream asset.",
    )
    def neighbours(
        context: dg.AssetExecutionContext, config: NeighboursConfig, duckdb: DuckDBResource, search: SearchResource
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        with open_connection(duckdb) as conn:
            pks, vectors = newest_vectors(conn, spec, config.rows)
        pairs, served = [], [c for c in search.searcher().reader(spec.name).served_columns if c != spec.primary_key]
        if pks:
            hits = search.search_batch(spec.name, vectors, k=config.k + 1, where=config.where)  # +1: the row itself
            pairs = pair_up(hits, pks, spec.primary_key, config.k)
        context.log.info("%s: %d neighbours of %d newest rows", spec.name, len(pairs), len(pks))
        return dg.MaterializeResult(
            metadata={
                "preview": dg.MetadataValue.md(preview(pairs, spec.primary_key, served[0] if served else None)),
                "pairs": dg.MetadataValue.json(
                    [
                        {"row": p["row"], "rank": p["rank"], "neighbour": p[spec.primary_key], "score": p["score"]}
                        for p in pairs
                    ]
                ),
                "rows": len(pks),
                "neighbours": len(pairs),
                "k": config.k,
                "where": config.where or "",
                "seconds": round(time.perf_counter() - started, 3),
            }
        )

    return neighbours
