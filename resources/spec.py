"""The dataset spec: which Parquet sources quiver serves, and how they are embedded and indexed.

A YAML file, close to Spice's spicepod so a Spice user can port a dataset unchanged. Two
environment variables place everything: ``QUIVER_DATASETS`` (this file; default ``datasets.yaml``
at the project root) and ``QUIVER_HOME`` (the DuckDB file and one index directory per dataset;
default ``.quiver/`` at the project root)::

    datasets:
      - name: products
        from: data/products.parquet        # file, directory or glob of Parquet
        primary_key: product_id            # Spice: row_id
        refresh_mode: full                 # full | append
        columns: [name, description]       # served with search results; default: all source columns
        embeddings:
          column: description              # or columns: [title, description]
          model: all-MiniLM-L6-v2          # default; shipped offline with the project
        vectors:
          metric: cosine                   # cosine | l2 (l2sq, l2_norm, euclidean) | inner_product (ip, dot, dot_product)
          m: 16
          ef_construction: 128
          ef_search: 64
          dtype: f32                       # f32 | f16 | bf16 | i8
        full_text:                         # keyword search beside the vectors (hybrid by default)
          enabled: true                    # default true
          columns: [description]           # default: the embedded columns; served with results
          stemmer: english                 # default none: a Snowball language for word endings
        snapshots:                         # Weaviate's conditions; all must hold
          enabled: true
          interval_seconds: 21600
          min_delta_commitlogs: 1
          min_delta_size_percent: 5
          on_startup: true

Optional keys besides those above: ``time_column`` (only with ``refresh_mode: append``),
``refresh_cron`` (5-field cron), ``embeddings.separator`` (joins several columns, default a
newline), ``snapshots.rebuild_tombstone_percent`` (deleted/present above it makes the next
snapshot a full rebuild; default 20), ``embeddings.quantize`` (``int8``: embed with a dynamically
quantized ONNX model that must pass a fidelity gate; a different model identity, so switching it
needs a full rebuild; default off), ``embeddings.fan_out`` (1..256, default 1: how many parts an
incremental refresh's rows are embedded in, each part a step of its own that any executor runs in
parallel, committed by one writer; see ``resources/embed_fanout.py``). ``from`` may carry Spice's
``file:`` / ``file://`` prefix; a relative path is resolved against the directory of the spec file. ``checks`` sets the bounds of
the index's asset checks: ``recall_at_10_min`` (below it the check fails and blocks the snapshot;
default 0.95), ``recall_at_10_warn`` (below it a warning; default 0.98) and ``sample`` (rows used
as queries; default 300).

Unknown keys, bad values and missing keys raise :class:`SpecError`, one line per problem, each
naming the dataset, the key, the bad value and the allowed values. Names that end up in SQL
(dataset name, primary key, columns) must be plain identifiers: that is the injection guard.
This module has no Dagster imports.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from quiver.resources.spec_file import (  # noqa: F401  (re-exported: the spec's public names)
    ENV_DATASETS,
    ENV_HOME,
    SpecError,
    UnknownDatasetError,
    default_home,
    default_spec_path,
    read_spec_yaml,
)
from quiver.resources.spicepod import SpicepodProblems, is_spicepod, translate

METRICS = ("cosine", "l2", "inner_product")
DTYPES = ("f32", "f16", "bf16", "i8")
REFRESH_MODES = ("full", "append")
QUANTIZATIONS = ("int8",)  # embeddings.quantize; off when unset
DEFAULT_MODEL = "all-MiniLM-L6-v2"
MODEL_WINDOWS = {DEFAULT_MODEL: 256}  # tokens the packaged model reads; others are checked when loaded
MIN_CHUNK_TOKENS = 8
MAX_FAN_OUT = 256  # embeddings.fan_out: parts (and parallel steps) of one refresh
# The Snowball languages tantivy's stemmer filter knows (full_text.stemmer)
STEMMERS = (
    "arabic", "danish", "dutch", "english", "finnish", "french", "german", "greek", "hungarian", "italian",
    "norwegian", "portuguese", "romanian", "russian", "spanish", "swedish", "tamil", "turkish",
)


def default_chunk_tokens(window: int) -> int:
    """The chunk size when the spec names none: a quarter of the model's window (64 tokens for
    all-MiniLM-L6-v2), overlap 0. Measured by ``make bench-chunking`` on Debian's long descriptions
    (a sentence from a description's second half as the query): success@10 0.605 without chunking,
    0.857 at 254 tokens, 0.920 at 128, 0.972 at 64, 0.994 at 32; overlap never helped. 64 keeps a
    few sentences of context per chunk for paraphrased queries, at +13.7% vectors over the whole
    source (32 would be one sentence a chunk, at +31%). README "Long text: chunks" has the table."""
    return window // 4
RESERVED_COLUMNS = frozenset(
    {"_key", "_seq", "_op", "_vector", "_content_hash", "_served_hash", "_chunk", "_chunk_start", "_chunk_end"}
)
log = logging.getLogger(__name__)

# Accepted spellings -> canonical value. Metric aliases: Spice's duckdb_distance_metric accepts
# exactly these; l2sq and ip are also DuckDB vss's names, cos usearch's.
_METRIC_ALIASES = {m: m for m in METRICS} | {
    "cos": "cosine", "l2sq": "l2", "l2_norm": "l2", "euclidean": "l2",
    "ip": "inner_product", "dot": "inner_product", "dot_product": "inner_product",
}
_DTYPE_ALIASES = {d: d for d in DTYPES} | {
    "float32": "f32", "float16": "f16", "half": "f16", "bfloat16": "bf16", "int8": "i8",
}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_MAX = 63
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least, so C:\ is a path


def _ident(value: str) -> str:
    if not _IDENT.fullmatch(value):
        raise ValueError(
            f"{value!r} must be a plain identifier (letters, digits, underscore; "
            "not starting with a digit)"
        )
    return value


def _column(value: str) -> str:
    if value.lower() in RESERVED_COLUMNS:
        raise ValueError(
            f"{value!r} is reserved for quiver's internal columns "
            f"({', '.join(sorted(RESERVED_COLUMNS))}); rename the column in the source"
        )
    return value


def _dataset_name(value: str) -> str:
    if len(value) > _NAME_MAX:
        raise ValueError(f"{value!r} is longer than {_NAME_MAX} characters")
    return value


def _choice(value: Any, aliases: dict[str, str], canonical: tuple[str, ...]) -> str:
    if isinstance(value, str) and value.strip().lower() in aliases:
        return aliases[value.strip().lower()]
    extra = sorted(set(aliases) - set(canonical))
    raise ValueError(
        f"got {value!r}; must be one of {', '.join(canonical)}"
        + (f" (aliases: {', '.join(extra)})" if extra else "")
    )


def _column_list(cols: tuple[str, ...]) -> tuple[str, ...]:
    if not cols:
        raise ValueError(
            "is empty; list at least one column (to serve all source columns, leave the key out)"
        )
    lowered = [c.lower() for c in cols]  # DuckDB identifiers are case-insensitive
    dups = sorted({c for c in cols if lowered.count(c.lower()) > 1})
    if dups:
        listed = ", ".join(map(repr, dups))
        raise ValueError(f"lists {listed} more than once; list each column once")
    return cols


Column = Annotated[str, Field(strict=True), AfterValidator(_ident), AfterValidator(_column)]
Columns = Annotated[tuple[Column, ...], AfterValidator(_column_list)]


def _local_source(value: str) -> str:
    for prefix in ("file://", "file:"):  # Spice writes local sources as file:path
        if value.startswith(prefix):
            return value[len(prefix):]
    return value


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )
    # Other accepted YAML keys -> the key this model expects; setting both is an error.
    _aliases: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _rename_aliases(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for alias, key in cls._aliases.items():
            if alias not in data:
                continue
            if key in data:
                raise ValueError(f"`{alias}` and `{key}` set the same thing; keep one")
            value = data.pop(alias)
            # Spice passes its duckdb_* params as strings ('16'); take those as numbers.
            if alias.startswith("duckdb_") and isinstance(value, str) and value.isdigit():
                value = int(value)
            data[key] = value
        return data

    @classmethod
    def _allowed_keys(cls) -> str:
        keys = [f.alias or n for n, f in cls.model_fields.items() if n != "source_path"]
        aliases = [a for a in cls._aliases if a not in keys]
        return ", ".join(keys) + (f" (aliases: {', '.join(aliases)})" if aliases else "")


class ChunkingSpec(_Model):
    """How a row's text longer than the model's window is split (Spice's ``chunking`` keys).

    Absent: chunk exactly the rows whose text is longer than the window, with the default size and
    overlap (``resources/embedding/chunking.py``); a row that fits is one chunk, as without chunking.
    ``enabled: false``: one vector per row of the text's first window, as before chunking existed
    (the run reports how many rows were cut).
    """

    enabled: Annotated[bool, Field(strict=True)] = True
    target_chunk_size: Annotated[int, Field(strict=True, ge=MIN_CHUNK_TOKENS)] | None = None  # tokens
    overlap_size: Annotated[int, Field(strict=True, ge=0)] | None = None  # tokens
    trim_whitespace: Annotated[bool, Field(strict=True)] = True

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSpec:
        if self.overlap_size is not None and self.target_chunk_size is not None:
            if self.overlap_size >= self.target_chunk_size:
                raise ValueError(
                    f"overlap_size ({self.overlap_size}) must be smaller than target_chunk_size "
                    f"({self.target_chunk_size})"
                )
        return self


class EmbeddingsSpec(_Model):
    """Which columns are embedded, with which model, chunked how."""

    _aliases: ClassVar[dict[str, str]] = {"use": "model"}  # Spice: embeddings[].use

    columns: Columns
    model: Annotated[str, Field(strict=True, min_length=1)] = DEFAULT_MODEL
    separator: Annotated[str, Field(strict=True)] = "\n"
    quantize: str | None = None  # int8: dynamically quantized ONNX model, a different model identity
    chunking: ChunkingSpec = ChunkingSpec()
    # 1: one step embeds and commits (resources/embed_refresh.py); N > 1: the rows to embed are
    # staged in N parts that N workers embed in parallel, one writer commits (resources/embed_fanout.py)
    fan_out: Annotated[int, Field(strict=True, ge=1, le=MAX_FAN_OUT)] = 1

    @model_validator(mode="after")
    def _chunks_fit_the_model(self) -> EmbeddingsSpec:
        window = MODEL_WINDOWS.get(self.model.removeprefix("sentence-transformers/"))
        size, overlap = self.chunking.target_chunk_size, self.chunking.overlap_size
        if window is None:
            return self  # a local model: its window is known once loaded (chunking.Chunker checks)
        if size is not None and size > window - 2:
            raise ValueError(
                f"chunking.target_chunk_size {size} is larger than {self.model} reads: "
                f"{MIN_CHUNK_TOKENS}..{window - 2} tokens ({window} less its two marker tokens)"
            )
        if size is None and overlap is not None and overlap >= default_chunk_tokens(window):
            raise ValueError(
                f"chunking.overlap_size {overlap} must be smaller than the default chunk size "
                f"({default_chunk_tokens(window)} tokens); set target_chunk_size too"
            )
        return self

    @field_validator("quantize", mode="before")
    @classmethod
    def _quantize(cls, value: Any) -> str | None:
        if value is None:
            return None
        return _choice(value, {q: q for q in QUANTIZATIONS}, QUANTIZATIONS)

    @property
    def identity(self) -> str:
        """The model identity the index records: ``model``, plus ``+int8`` when quantized."""
        return f"{self.model}+{self.quantize}" if self.quantize else self.model

    @property
    def content_identity(self) -> str:
        """What a row's content hash covers besides its text: the model identity, and the chunking
        when it is not the default, so changing it re-embeds every row. With the default (no block)
        a row hashes as it did before chunking existed: upgrading re-embeds nothing (a long row
        embedded before then keeps its one truncated vector until its text changes or a full rebuild)."""
        c = self.chunking
        if c == ChunkingSpec():
            return self.identity
        return f"{self.identity}|chunking={int(c.enabled)},{c.target_chunk_size},{c.overlap_size},{int(c.trim_whitespace)}"

    @model_validator(mode="before")
    @classmethod
    def _column_or_columns(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if ("column" in data) == ("columns" in data):
            raise ValueError(
                "set exactly one of `column: <name>` or `columns: [<name>, ...]`"
                + (", not both" if "column" in data else "")
            )
        if "column" in data:
            column = data["column"]
            data = {k: v for k, v in data.items() if k != "column"}
            data["columns"] = [column] if isinstance(column, str) else column
        return data


class VectorsSpec(_Model):
    """HNSW parameters of the usearch index."""

    # Aliases: DuckDB vss's CREATE INDEX ... USING HNSW WITH (metric, M, ef_construction,
    # ef_search) options, and Spice's DuckDB vector engine params (duckdb_distance_metric,
    # duckdb_metric, duckdb_hnsw_m, duckdb_hnsw_ef_construction, duckdb_hnsw_ef_search;
    # see spiceai.org/docs/components/vectors/duckdb), plus the short duckdb_<name> forms.
    _aliases: ClassVar[dict[str, str]] = {
        "M": "m",
        "duckdb_distance_metric": "metric", "duckdb_metric": "metric",
        "duckdb_hnsw_m": "m", "duckdb_m": "m",
        "duckdb_hnsw_ef_construction": "ef_construction",
        "duckdb_ef_construction": "ef_construction",
        "duckdb_hnsw_ef_search": "ef_search", "duckdb_ef_search": "ef_search",
    }

    metric: str = "cosine"
    m: Annotated[int, Field(strict=True, ge=2)] = 16
    ef_construction: Annotated[int, Field(strict=True, ge=1)] = 128
    ef_search: Annotated[int, Field(strict=True, ge=1)] = 64
    dtype: str = "f32"

    @field_validator("metric", mode="before")
    @classmethod
    def _metric(cls, value: Any) -> str:
        return _choice(value, _METRIC_ALIASES, METRICS)

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> str:
        return _choice(value, _DTYPE_ALIASES, DTYPES)


_NonNegFloat = Annotated[float, Field(strict=True, ge=0)]


class FullTextSpec(_Model):
    """The dataset's full-text index (tantivy, BM25), fused with the vectors for text queries.

    On by default over the embedded columns; ``columns`` may name other source columns (a product
    code, a title that is not embedded), and every full-text column is served, since the index is
    derived from the commit log, which carries the served columns. ``stemmer``: a Snowball
    language (``english``, ``french``, ...) for word endings; identifiers are never stemmed. A
    change takes effect with the next snapshot (Spice: ``full_text_search``)."""

    enabled: Annotated[bool, Field(strict=True)] = True
    columns: Columns | None = None
    stemmer: Annotated[str, Field(strict=True, min_length=1)] | None = None

    @field_validator("stemmer")
    @classmethod
    def _stemmer(cls, value: str | None) -> str | None:
        if value is not None and value.lower() not in STEMMERS:
            raise ValueError(f"got {value!r}; must be one of {', '.join(STEMMERS)}")
        return value.lower() if value is not None else None


class SnapshotsSpec(_Model):
    """When a snapshot of the index is taken; all conditions must hold (Weaviate's)."""

    enabled: Annotated[bool, Field(strict=True)] = True
    interval_seconds: _NonNegFloat = 21600.0
    min_delta_commitlogs: Annotated[int, Field(strict=True, ge=0)] = 1
    min_delta_size_percent: _NonNegFloat = 5.0
    on_startup: Annotated[bool, Field(strict=True)] = True
    rebuild_tombstone_percent: _NonNegFloat = 20.0
    # true keeps the previous snapshot and the segments after it, a fallback that serves around a
    # damaged snapshot without DuckDB, at the cost of a second copy of the vectors (2.9x the raw
    # bytes on disk against 2.1x, make bench). Off by default: DuckDB holds every vector, so the
    # next refresh rebuilds a damaged snapshot, and readers already serving keep their mapped copy.
    keep_previous: Annotated[bool, Field(strict=True)] = False


_Fraction = Annotated[float, Field(strict=True, ge=0, le=1)]


class ChecksSpec(_Model):
    """Bounds of the asset checks: recall@10 of the HNSW index against exact search on a sample."""

    recall_at_10_min: _Fraction = 0.95  # below: the check fails (ERROR) and blocks the snapshot
    recall_at_10_warn: _Fraction = 0.98  # below: the check fails as a WARN only
    sample: Annotated[int, Field(strict=True, ge=1, le=100_000)] = 300  # rows used as queries

    @model_validator(mode="after")
    def _warn_above_min(self) -> ChecksSpec:
        if self.recall_at_10_warn < self.recall_at_10_min:
            raise ValueError(
                f"recall_at_10_warn ({self.recall_at_10_warn}) is below recall_at_10_min ({self.recall_at_10_min}); "
                "the warning bound must be at least the failing bound"
            )
        return self


class DatasetSpec(_Model):
    """One dataset: a Parquet source, its key, what is served and how it is embedded."""

    _aliases: ClassVar[dict[str, str]] = {"source": "from", "row_id": "primary_key"}

    name: Annotated[str, Field(strict=True), AfterValidator(_ident), AfterValidator(_dataset_name)]
    source: Annotated[str, Field(strict=True, alias="from")]
    source_path: Path
    primary_key: Column
    refresh_mode: str = "full"
    time_column: Column | None = None
    columns: Columns | None = None
    embeddings: EmbeddingsSpec
    vectors: VectorsSpec = VectorsSpec()
    full_text: FullTextSpec = FullTextSpec()
    snapshots: SnapshotsSpec = SnapshotsSpec()
    checks: ChecksSpec = ChecksSpec()
    refresh_cron: Annotated[str, Field(strict=True)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _resolve_source(cls, data: Any, info: ValidationInfo) -> Any:
        """Set ``source_path`` from ``from``, relative to the context's ``base_dir`` (else cwd)."""
        if not isinstance(data, dict):
            return data
        if info.context is not None and "source_path" in data:
            raise ValueError(f"unknown key `source_path`; allowed keys: {cls._allowed_keys()}")
        source = data.get("from", data.get("source"))
        if "source_path" not in data:
            base = Path((info.context or {}).get("base_dir") or Path.cwd()).expanduser()
            path = Path(_local_source(source)).expanduser() if isinstance(source, str) else Path()
            data = {**data, "source_path": (base / path).resolve()}
        return data

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        local = _local_source(value)
        if not local.strip():
            raise ValueError("is empty; give a Parquet file, directory or glob")
        if _URL_SCHEME.match(local):
            raise ValueError(
                f"got {value!r}; only local Parquet is supported: a path, optionally prefixed file:"
            )
        return local

    @field_validator("refresh_mode", mode="before")
    @classmethod
    def _refresh_mode(cls, value: Any) -> str:
        return _choice(value, {m: m for m in REFRESH_MODES}, REFRESH_MODES)

    @field_validator("refresh_cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError(
                f"got {value!r}; must have 5 fields: minute hour day-of-month month day-of-week "
                "(e.g. '0 * * * *')"
            )
        return value

    @property
    def full_text_columns(self) -> tuple[str, ...]:
        """The columns the full-text index holds (none when it is off)."""
        if not self.full_text.enabled:
            return ()
        return self.full_text.columns or tuple(self.embeddings.columns)

    @property
    def served_columns(self) -> tuple[str, ...] | None:
        """``columns`` plus the full-text columns it leaves out; None: every source column."""
        if self.columns is None:
            return None
        return (*self.columns, *(c for c in self.full_text_columns if c not in self.columns))

    @model_validator(mode="after")
    def _time_column_needs_append(self) -> DatasetSpec:
        if self.time_column is not None and self.refresh_mode != "append":
            raise ValueError(
                f"time_column {self.time_column!r} is only allowed with refresh_mode: append "
                f"(got refresh_mode {self.refresh_mode!r}); set refresh_mode: append or remove it"
            )
        return self


class QuiverSpec(_Model):
    """Every dataset in one spec file."""

    path: Path | None = None
    datasets: tuple[DatasetSpec, ...]
    warnings: tuple[str, ...] = ()  # keys accepted but without effect (a spicepod's), one line each

    @model_validator(mode="after")
    def _unique_names(self) -> QuiverSpec:
        if not self.datasets:
            raise ValueError("`datasets:` is empty; add at least one dataset")
        seen: set[str] = set()
        for name in self.names:
            if name.lower() in seen:  # one DuckDB table and one index directory each
                raise ValueError(
                    f"dataset {name!r} is defined more than once (names are case-insensitive); "
                    "give each dataset a unique name"
                )
            seen.add(name.lower())
        return self

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.datasets)

    def get(self, name: str) -> DatasetSpec:
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        where = f" in {self.path}" if self.path else ""
        raise UnknownDatasetError(
            f"unknown dataset {name!r}{where}; known datasets: {', '.join(self.names)}"
        )


def load_spec(path: str | Path | None = None) -> QuiverSpec:
    """Read and validate a spec file (default: :func:`default_spec_path`)."""
    data, path = read_spec_yaml(path)
    return parse_spec(data, base_dir=path.parent, path=path)


def parse_spec(data: Any, base_dir: Path, path: Path | None = None) -> QuiverSpec:
    """Validate parsed YAML; relative ``from`` paths are resolved against ``base_dir``."""
    where = f"{path}: " if path else ""
    if not isinstance(data, dict) or "datasets" not in data:
        got = "a mapping without `datasets:`" if isinstance(data, dict) else type(data).__name__
        raise SpecError(
            f"{where}the top level must be a mapping with a `datasets:` list (got {got})"
        )
    if not isinstance(data["datasets"], list):
        raise SpecError(
            f"{where}`datasets:` must be a list of datasets (got {data['datasets']!r})"
        )
    warnings: list[str] = []
    if is_spicepod(data):
        try:
            data, warnings = translate(data)
        except SpicepodProblems as exc:
            head = f"invalid dataset spec{' ' + str(path) if path else ''}"
            raise SpecError("\n  ".join([head + ":", *exc.problems]), exc.problems) from None
        for warning in warnings:
            log.warning("%s%s", where, warning)
    unknown = sorted(set(data) - {"datasets"}, key=str)
    if unknown:
        raise SpecError(f"{where}unknown top-level key(s) {', '.join(map(repr, unknown))}; "
                        "allowed keys: datasets")
    try:
        return QuiverSpec.model_validate(
            {"path": path, "datasets": data["datasets"], "warnings": tuple(warnings)}, context={"base_dir": Path(base_dir)}
        )
    except ValidationError as exc:
        problems = [_problem(err, data["datasets"]) for err in exc.errors()]
        head = f"invalid dataset spec{' ' + str(path) if path else ''}"
        raise SpecError("\n  ".join([head + ":", *problems]), problems) from None


_NESTED = {
    "embeddings": EmbeddingsSpec, "chunking": ChunkingSpec, "vectors": VectorsSpec, "snapshots": SnapshotsSpec,
    "checks": ChecksSpec, "full_text": FullTextSpec,
}


def _problem(err: dict[str, Any], raw: list[Any]) -> str:
    """One readable line for one pydantic error: dataset, key path, value, the fix."""
    loc = list(err["loc"])
    label = ""
    if loc[:1] == ["datasets"] and len(loc) > 1 and isinstance(loc[1], int):
        item = raw[loc[1]]
        name = item.get("name") if isinstance(item, dict) else None
        label = f"dataset {name!r}" if isinstance(name, str) else f"datasets[{loc[1]}]"
        loc = loc[2:]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = next((p for p in reversed(loc[:-1]) if isinstance(p, str)), None)
        model = _NESTED.get(parent, DatasetSpec if label else QuiverSpec)
        msg = f"unknown key; allowed keys: {model._allowed_keys()}"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind in ("value_error", "assertion_error"):
        msg = str(err["ctx"]["error"])
    else:
        msg = f"{err['msg']} (got {err['input']!r})"
    return ": ".join(p for p in (label, key, msg) if p)
