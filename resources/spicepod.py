"""Spice's spicepod, read as a quiver spec: the YAML a Spice user copies from Spice's "DuckDB Vector
Engine" page runs unchanged. ``spec.parse_spec`` calls ``translate`` on the parsed YAML first; a
spec already in quiver's own shape passes through untouched.

What is translated (Spice key -> quiver key):

    version, kind: Spicepod, name          accepted silently (kind must be Spicepod)
    embeddings: [{name, from}]             models, referenced by name from the datasets' columns;
                                           ``from: huggingface:huggingface.co/<org>/<model>`` of a model
                                           shipped offline, or ``file:<directory>`` of a saved
                                           sentence-transformers model; anything else is refused:
                                           quiver never downloads a model
    datasets[].columns: [{name, embeddings: [{from, row_id, chunking}], full_text_search}]
                                           embeddings.columns (the columns with embeddings),
                                           embeddings.model, primary_key (row_id), chunking,
                                           full_text.columns; every source column is served
    datasets[].acceleration: {enabled: true, engine: duckdb, params, refresh_mode, primary_key}
                                           the HNSW params (duckdb_distance_metric, duckdb_metric,
                                           duckdb_hnsw_m, ..._ef_construction, ..._ef_search) become
                                           ``vectors``; refresh_mode, primary_key as quiver's
    datasets[].vectors: {enabled: true, engine: duckdb, params}
                                           ``vectors``; where both set a param, this block wins
    datasets[].params: {file_format: parquet}

Keys that change nothing quiver does (``IGNORED``: refresh_check_interval, spill_writes, ...) are
accepted and named in a warning. Keys that would change results and that quiver does not do
(``refresh_sql``, another acceleration engine, a remote embedding model, ...) are refused by name.
No Dagster, and below the spec: it imports nothing of quiver's.
"""

from __future__ import annotations

from typing import Any

# Models shipped offline (the embedding package's own); Spice names them by their hub path.
OFFLINE_MODELS = ("all-MiniLM-L6-v2",)
HUB_PREFIXES = ("huggingface:huggingface.co/", "huggingface:", "hf:")
# Spice's HNSW params -> quiver's vectors keys, in the order applied: duckdb_distance_metric takes
# precedence over its alias duckdb_metric when both are set, as Spice documents.
VECTOR_PARAMS = {
    "duckdb_metric": "metric", "duckdb_distance_metric": "metric", "duckdb_hnsw_m": "m",
    "duckdb_hnsw_ef_construction": "ef_construction", "duckdb_hnsw_ef_search": "ef_search",
}
# Spice keys that change nothing about what quiver stores or answers: accepted, named in a warning.
IGNORED = {
    "top": ("metadata", "runtime", "secrets", "dependencies", "extensions", "catalogs", "views"),
    "dataset": ("description", "metadata", "ready_state", "replication", "dependsOn", "depends_on", "invalid_type_action", "unsupported_type_action"),
    "acceleration": ("mode", "refresh_check_interval", "refresh_jitter_enabled", "refresh_jitter_max", "refresh_retry_enabled",
                     "refresh_retry_max_attempts", "refresh_on_startup", "spill_writes", "ready_state", "indexes", "retention_check_enabled",
                     "retention_check_interval", "disable_query_push_down", "snapshots"),
    "acceleration.params": ("duckdb_file", "duckdb_memory_limit", "duckdb_index_scan_percentage", "duckdb_index_scan_max_count",
                            "duckdb_preserve_insertion_order", "spill_writes"),
    "column": ("description",),
}
# Spice keys quiver does not do and that would change what is stored or answered: refused by name.
REFUSED = {
    "acceleration": ("refresh_sql", "refresh_data_window", "retention_period", "retention_sql", "on_conflict", "primary_key_constraint"),
    "embedding": ("vector_size", "params"),
}


class SpicepodProblems(ValueError):
    """One line per problem; ``spec.parse_spec`` reports them as a SpecError."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def is_spicepod(data: Any) -> bool:
    """Whether the YAML is in Spice's shape (anything quiver's own spec never has)."""
    if not isinstance(data, dict):
        return False
    if "kind" in data or "version" in data or isinstance(data.get("embeddings"), list):
        return True
    for dataset in data.get("datasets") or []:
        if isinstance(dataset, dict) and (
            "acceleration" in dataset
            or _spice_vectors(dataset.get("vectors"))
            or any(isinstance(c, dict) for c in dataset.get("columns") or [])
        ):
            return True
    return False


def translate(data: dict) -> tuple[dict, list[str]]:
    """(quiver-shaped spec, warnings). Raises SpicepodProblems naming each key quiver refuses."""
    problems: list[str] = []
    warnings: list[str] = []
    kind = data.get("kind")
    if kind is not None and kind != "Spicepod":
        problems.append(f"kind: {kind!r}; a spec file is `kind: Spicepod` (or leave kind out)")
    _ignore(data, IGNORED["top"], "the top level", warnings, drop=False)
    unknown = sorted(set(data) - {"version", "kind", "name", "embeddings", "datasets", *IGNORED["top"]}, key=str)
    if unknown:
        problems.append(f"unknown top-level key(s) {', '.join(map(repr, unknown))}; allowed keys: datasets, embeddings, "
                        "version, kind, name")
    models = _models(data.get("embeddings") or [], problems)
    datasets = [
        _dataset(d, models, problems, warnings) if isinstance(d, dict) else d for d in data.get("datasets") or []
    ]
    if problems:
        raise SpicepodProblems(problems)
    return {"datasets": datasets}, warnings


def model_name(reference: str) -> str | None:
    """A Spice model reference as quiver's model name: the packaged model's name, a local
    directory (``file:``), or None when quiver cannot run it offline."""
    if reference.startswith("file:"):
        return reference.removeprefix("file://").removeprefix("file:")
    path = reference
    for prefix in HUB_PREFIXES:
        if path.startswith(prefix):
            path = path[len(prefix):]
            break
    name = path.removeprefix("sentence-transformers/")
    return name if name in OFFLINE_MODELS else None


def _models(entries: Any, problems: list[str]) -> dict[str, str]:
    if not isinstance(entries, list):
        problems.append("embeddings: must be a list of models ({name, from}), as in Spice")
        return {}
    models = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("from"), str) or not isinstance(entry.get("name"), str):
            problems.append(f"embeddings[{i}]: each model needs `name` and `from` (got {entry!r})")
            continue
        resolved = model_name(entry["from"])
        if resolved is None:
            problems.append(_not_offline(f"embeddings[{entry['name']!r}]", entry["from"]))
            continue
        extra = sorted(set(entry) - {"name", "from", "description", "params"})
        if extra:
            problems.append(f"embeddings[{entry['name']!r}]: unknown key(s) {', '.join(map(repr, extra))}; allowed: name, from")
        models[entry["name"]] = resolved
    return models


def _not_offline(where: str, reference: str) -> str:
    return (
        f"{where}: model {reference!r} is not available offline (quiver never downloads a model); available: "
        + ", ".join(f"huggingface:huggingface.co/sentence-transformers/{m}" for m in OFFLINE_MODELS)
        + "; to add one, save it with SentenceTransformer.save(<dir>) and write `from: file:<dir>`"
    )


def _dataset(raw: dict, models: dict[str, str], problems: list[str], warnings: list[str]) -> dict:
    dataset = dict(raw)
    label = f"dataset {dataset.get('name')!r}"
    _ignore(dataset, IGNORED["dataset"], label, warnings)
    params = dataset.pop("params", None)
    if params is not None:
        file_format = params.get("file_format", "parquet") if isinstance(params, dict) else None
        if file_format != "parquet" or set(params) - {"file_format"}:
            problems.append(f"{label}: params {params!r}: quiver reads Parquet only (`params: {{file_format: parquet}}`)")
    vector_params: dict = {}
    acceleration = dataset.pop("acceleration", None)
    if acceleration is not None:
        vector_params |= _acceleration(acceleration, dataset, label, problems, warnings)
    vectors = dataset.get("vectors")
    if _spice_vectors(vectors):
        vector_params |= _vector_keys(_engine_block(vectors, "vectors", label, problems), label, "vectors", problems)
        dataset.pop("vectors")  # its params win over acceleration's
    elif isinstance(vectors, dict):
        vector_params = vector_params | vectors
    if vector_params:
        dataset["vectors"] = vector_params
    columns = dataset.get("columns")
    if isinstance(columns, list) and any(isinstance(c, dict) for c in columns):
        _columns(dataset, columns, models, label, problems, warnings)
    return dataset


def _spice_vectors(block: Any) -> bool:
    return isinstance(block, dict) and bool({"engine", "params", "enabled"} & set(block))


def _engine_block(block: Any, key: str, label: str, problems: list[str]) -> dict:
    """``{enabled: true, engine: duckdb, params}`` -> its params."""
    if not isinstance(block, dict):
        problems.append(f"{label}: {key}: must be a mapping (got {block!r})")
        return {}
    if block.get("enabled", True) is not True:
        problems.append(f"{label}: {key}.enabled: {block.get('enabled')!r}; quiver always keeps the dataset in DuckDB "
                        "with an HNSW index beside it: set it true or leave it out")
    engine = block.get("engine", "duckdb")
    if engine != "duckdb":
        problems.append(f"{label}: {key}.engine: {engine!r}; quiver's engine is duckdb (with usearch beside it)")
    extra = sorted(set(block) - {"enabled", "engine", "params"}, key=str)
    if key == "vectors" and extra:
        problems.append(f"{label}: vectors: unknown key(s) {', '.join(map(repr, extra))}; allowed: enabled, engine, params")
    params = block.get("params") or {}
    if not isinstance(params, dict):
        problems.append(f"{label}: {key}.params: must be a mapping (got {params!r})")
        return {}
    return dict(params)


def _acceleration(block: Any, dataset: dict, label: str, problems: list[str], warnings: list[str]) -> dict:
    if isinstance(block, dict):
        block = dict(block)
        _ignore(block, IGNORED["acceleration"], f"{label}: acceleration", warnings)
        for key in REFUSED["acceleration"]:
            if key in block:
                problems.append(f"{label}: acceleration.{key} is not supported by quiver (it would change what is stored); remove it")
                block.pop(key)
        if "refresh_mode" in block:
            dataset.setdefault("refresh_mode", block.pop("refresh_mode"))
        if "primary_key" in block:
            dataset.setdefault("primary_key", block.pop("primary_key"))
        extra = sorted(set(block) - {"enabled", "engine", "params"}, key=str)
        if extra:
            problems.append(f"{label}: acceleration: unknown key(s) {', '.join(map(repr, extra))}")
            for key in extra:
                block.pop(key)
    params = _engine_block(block, "acceleration", label, problems)
    ignored = [key for key in params if key in IGNORED["acceleration.params"]]
    if ignored:
        warnings.append(f"{label}: acceleration.params {', '.join(ignored)} have no effect in quiver; ignored")
    return _vector_keys({k: v for k, v in params.items() if k not in ignored}, label, "acceleration", problems)


def _vector_keys(params: dict, label: str, where: str, problems: list[str]) -> dict:
    """Spice's HNSW params as quiver's ``vectors`` keys (numbers written as strings, as Spice's
    examples do, become numbers)."""
    unknown = sorted(set(params) - set(VECTOR_PARAMS))
    if unknown:
        problems.append(f"{label}: {where}.params: unknown param(s) {', '.join(unknown)}; quiver reads "
                        f"{', '.join(VECTOR_PARAMS)}")
    out = {}
    for spice, key in VECTOR_PARAMS.items():
        if spice in params:
            value = params[spice]
            out[key] = int(value) if isinstance(value, str) and value.isdigit() else value
    return out


def _columns(dataset: dict, columns: list, models: dict[str, str], label: str, problems: list[str], warnings: list[str]) -> None:
    """Spice's column objects -> quiver's embeddings, primary key and full-text columns. Every
    source column stays served (Spice queries the whole row)."""
    embedded, chosen, row_ids, chunking, full_text = [], set(), set(), None, []
    for column in columns:
        if not isinstance(column, dict) or not isinstance(column.get("name"), str):
            problems.append(f"{label}: columns: each entry needs a `name` (got {column!r})")
            continue
        name = column["name"]
        _ignore(dict(column), IGNORED["column"], f"{label}: column {name!r}", warnings)
        extra = sorted(set(column) - {"name", "embeddings", "full_text_search", *IGNORED["column"]}, key=str)
        if extra:
            problems.append(f"{label}: column {name!r}: unknown key(s) {', '.join(map(repr, extra))}; allowed: name, "
                            "embeddings, full_text_search")
        search = column.get("full_text_search")
        if isinstance(search, dict) and search.get("enabled", True):
            full_text.append(name)
            if "row_id" in search:
                row_ids |= set(_as_list(search["row_id"]))
        for entry in column.get("embeddings") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("from"), str):
                problems.append(f"{label}: column {name!r}: embeddings entries need `from` (a model's name)")
                continue
            for key in REFUSED["embedding"]:
                if key in entry:
                    problems.append(f"{label}: column {name!r}: embeddings.{key} is not supported by quiver; remove it")
            reference = entry["from"]
            model = models.get(reference) or model_name(reference)
            if model is None:
                known = ", ".join(models) or "none"
                problems.append(_not_offline(f"{label}: column {name!r}", reference) + f" (models defined under embeddings: {known})")
                continue
            chosen.add(model)
            embedded.append(name)
            if "row_id" in entry:
                row_ids |= set(_as_list(entry["row_id"]))
            if "chunking" in entry:
                chunking = entry["chunking"]
    if len(chosen) > 1:
        problems.append(f"{label}: columns are embedded with different models ({', '.join(sorted(chosen))}); quiver "
                        "embeds a dataset's columns with one model")
    if len(row_ids) > 1:
        problems.append(f"{label}: row_id names several columns ({', '.join(sorted(row_ids))}); quiver's primary key is one column")
    elif row_ids:
        dataset.setdefault("primary_key", row_ids.pop())
    dataset.pop("columns")
    if not embedded:
        if not problems:
            problems.append(f"{label}: no column has `embeddings:`; name the model of at least one column")
        return
    embeddings = {"columns": embedded, "model": chosen.pop() if len(chosen) == 1 else "all-MiniLM-L6-v2"}
    if chunking is not None:
        embeddings["chunking"] = chunking
    dataset["embeddings"] = embeddings
    if full_text:
        dataset["full_text"] = {"columns": full_text}


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def _ignore(block: dict, keys: tuple[str, ...], where: str, warnings: list[str], drop: bool = True) -> None:
    present = [key for key in keys if key in block]
    if present:
        warnings.append(f"{where}: {', '.join(present)} {'has' if len(present) == 1 else 'have'} no effect in quiver; ignored")
    if drop:
        for key in present:
            block.pop(key)
