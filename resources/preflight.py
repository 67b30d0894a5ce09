"""What would stop a dataset's refresh, found before any work: the ``validate`` command, ``status``
and the top of every run ask it. No Dagster.

Checked, one line per problem, each naming the dataset, what is wrong and the fix: the source
files exist (``from``); their columns hold the primary key, the embedded columns (as text), the
served and full-text columns and the time column (read from the Parquet footers, no data page);
the model is available offline. Data checks (a null or repeated primary key) need the rows: the
rows asset makes them when it loads them.
"""

from __future__ import annotations

import duckdb

from quiver.resources.embedding import ModelNotFoundError, resolve_model_path
from quiver.resources.spec import DatasetSpec
from quiver.resources.warehouse import layout_for, resolve_source_files, schema_problems
from quiver.resources.warehouse.layout import SourceNotFoundError, columns_of


def preflight(spec: DatasetSpec) -> list[str]:
    """Every problem found for ``spec``; empty when a refresh can start."""
    problems = []
    try:
        files = resolve_source_files(spec.name, spec.source_path)
    except SourceNotFoundError as error:
        problems.append(str(error))
        files = []
    if files:
        try:
            with duckdb.connect() as conn:
                columns = columns_of(conn, "SELECT * FROM read_parquet(?, union_by_name = true)", [files])
        except duckdb.Error as error:
            problems.append(f"dataset {spec.name!r}: the source {spec.source_path} cannot be read as Parquet ({error}); fix `from`")
        else:
            problems += schema_problems(layout_for(spec), columns, spec.time_column)
    try:
        resolve_model_path(spec.embeddings.model)
    except ModelNotFoundError as error:
        problems.append(f"dataset {spec.name!r}: {error}")
    return problems
