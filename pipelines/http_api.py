"""An HTTP front for the searcher that speaks Spice's search API: ``python -m quiver serve``.

    POST /v1/search  {"text": "wireless headphones", "datasets": ["products"], "where": "price < 100",
                      "additional_columns": ["name"], "limit": 10, "keywords": ["WH-1000XM5"]}
      -> 200 {"matches": [{"value": ..., "score": ..., "dataset": ..., "primary_key": {...},
                           "metadata": {...}, "fused_score": ..., "text_score": ...,
                           "vector_rank": ..., "text_rank": ...}, ...], "duration_ms": 3}
    GET  /health     -> 200 {"status": "ok", "datasets": [{"dataset", "built", "vectors", "served_seq"}]}

Request fields, as in Spice: ``text`` (required), ``datasets`` (default: every dataset of the spec
that has an index), ``where`` (a SQL predicate over served columns), ``additional_columns``
(served columns returned under ``metadata``), ``limit`` (default 10; Spice's default is 3),
``keywords`` (a list of strings: what the full-text pass searches instead of ``text``; as in Spice,
adding them makes the search hybrid). quiver adds ``mode``, ``ef_search`` and ``group``.

``mode``: ``hybrid`` (the vector and full-text passes fused by reciprocal rank), ``vector`` or
``text`` (BM25 alone). Left out, it is ``hybrid`` when ``keywords`` are given or every searched
dataset has a full-text index (on by default), else ``vector``, so one answer has one kind of score.
Each match carries ``score``: the vector similarity in modes ``hybrid`` and ``vector``, BM25 in mode
``text``. In mode ``hybrid`` it also carries ``fused_score``, ``text_score`` (BM25, null when the
text pass did not find the row), ``vector_rank`` and ``text_rank`` (1-based, null when that pass did
not rank the row). ``keywords`` need a text pass: with ``"mode": "vector"`` they are refused.

Each dataset is searched for ``limit`` rows and the results merged best first, so ``limit`` caps
the whole answer: by ``fused_score`` in mode ``hybrid`` (it is made of ranks, so it compares across
datasets), else by ``score`` (BM25 in mode ``text``: comparable within one dataset only, so a
several-dataset text answer is an interleaving by raw BM25). ``value`` is the text that
was embedded (the embedding columns joined by the spec's separator) when those columns are served,
else the primary key. A row whose text was split into chunks is one match, scored by its best
chunk; ``"group": false`` returns the best chunks instead, each with the chunk's own text as
``value`` and ``chunk`` (its number, start and end) beside it. ``duration_ms`` is an integer, as in Spice.

Errors are ``{"error": "..."}``: 400 for a bad request, 404 for an unknown dataset or one with no
index yet, 500 otherwise. Searches run one at a time in a worker thread (see ``lock`` below).
"""

from __future__ import annotations

import json
import threading
import time

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from quiver.pipelines.query import searcher
from quiver.resources.index.errors import IndexNotBuiltError
from quiver.resources.search import MODES, SearchError, embedded_texts
from quiver.resources.spec import UnknownDatasetError, load_spec
from quiver.resources.values import jsonable

FIELDS = ("text", "datasets", "where", "additional_columns", "limit", "keywords", "mode", "ef_search", "group")
HYBRID_FIELDS = ("fused_score", "text_score", "vector_rank", "text_rank")  # beside "score", in mode hybrid
CHUNK_FIELDS = ("chunk", "chunk_number", "chunk_start", "chunk_end")
DEFAULT_LIMIT = 10


class BadRequest(ValueError):
    """The request body is not a search request; the message says which field is wrong."""


def create_app(searcher, spec=None) -> Starlette:
    """A Starlette app over ``searcher``; ``spec`` (a QuiverSpec) names the datasets and their
    embedding columns, so matches can carry the embedded text as ``value``."""
    names = tuple(spec.names) if spec is not None else tuple(searcher.datasets or ())
    texts = {**(embedded_texts(spec) if spec is not None else {}), **searcher.texts}
    # One search at a time, on purpose for now: what the reader builds lazily per served state (the
    # delta's graph, column selections, the filter's in-memory DuckDB connection) and the embedder
    # have not been shown safe under concurrent queries. Lifting it needs a concurrency test first.
    lock = threading.Lock()

    def value_of(dataset: str, row: dict, pk: str):
        text = texts.get(dataset)  # how the warehouse builds the embedded text, in one place
        if text is not None and all(c in row for c in text.columns):
            return text.of(row)
        return row[pk]

    def search_one(dataset: str, request: dict, mode: str) -> list[dict]:
        reader = searcher.reader(dataset)
        pk, served = reader.manifest.primary_key, reader.served_columns
        extra = request["additional_columns"]
        unknown = [c for c in extra if c not in served and c != pk]
        if unknown:
            raise SearchError(
                f"dataset {dataset!r}: additional_columns {unknown} are not served; served columns: {', '.join(served)}"
            )
        embedded = spec.get(dataset).embeddings.columns if spec is not None else ()
        columns = list(dict.fromkeys([*(c for c in extra if c != pk), *(c for c in embedded if c in served)]))
        chunks = not request["group"]
        whole_text = dataset in searcher.texts and bool(embedded) and all(c in served for c in embedded)
        if chunks:  # each match is a chunk: its own text when it can be cut, and where it is
            columns += [c for c in CHUNK_FIELDS if c != "chunk" or whole_text]
        table = searcher.search(
            dataset,
            request["text"],
            k=request["limit"],
            columns=columns,
            where=request["where"],
            ef_search=request["ef_search"],
            group=not chunks,
            mode=mode,
            keywords=request["keywords"],
        )
        matches = []
        for row in table.to_pylist():
            match = {
                "value": row["chunk"] if chunks and whole_text else value_of(dataset, row, pk),
                "score": row["score"],
                "dataset": dataset,
                "primary_key": {pk: row[pk]},
                "metadata": {c: row[c] for c in extra},
            }
            if mode == "hybrid":
                match.update({name: row[name] for name in HYBRID_FIELDS})
            if chunks:
                match["chunk"] = {"number": row["chunk_number"], "start": row["chunk_start"], "end": row["chunk_end"]}
            matches.append(match)
        return matches

    def search_all(request: dict) -> list[dict]:
        with lock:
            datasets = request["datasets"]
            if datasets is None:  # every dataset that has an index; one still building is not an error
                datasets = [d for d in names if _built(searcher, d)]
                if not datasets:
                    raise IndexNotBuiltError(f"no dataset has an index yet (datasets: {', '.join(names) or 'none'})")
            datasets = list(dict.fromkeys(datasets))
            mode = request["mode"] or _default_mode(searcher, datasets, request["keywords"])
            matches = [m for d in datasets for m in search_one(d, request, mode)]
        # Stable: within one dataset its own order stands (a hybrid tie is broken by ranks there).
        matches.sort(key=lambda m: m["fused_score" if mode == "hybrid" else "score"], reverse=True)
        return matches[: request["limit"]]

    async def search(request: Request) -> JSONResponse:
        started = time.perf_counter()
        try:
            body = _parse(await request.body())
            matches = await run_in_threadpool(search_all, body)
        except (UnknownDatasetError, IndexNotBuiltError) as error:
            return _error(404, error)
        except (BadRequest, SearchError) as error:
            return _error(400, error)
        duration_ms = round((time.perf_counter() - started) * 1000)
        return JSONResponse({"matches": jsonable(matches), "duration_ms": duration_ms})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "datasets": await run_in_threadpool(_health, searcher, names, lock)})

    async def server_error(request: Request, error: Exception) -> JSONResponse:
        return _error(500, error)  # Starlette re-raises it after, so uvicorn logs the traceback

    return Starlette(
        routes=[Route("/v1/search", search, methods=["POST"]), Route("/health", health, methods=["GET"])],
        exception_handlers={Exception: server_error},
    )


def _error(status: int, error: Exception) -> JSONResponse:
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return JSONResponse({"error": str(message)}, status_code=status)


def _parse(raw: bytes) -> dict:
    """The request body, checked field by field; defaults filled in."""
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"the body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object like {"text": "...", "limit": 10}')
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown fields {unknown}; accepted fields: {', '.join(FIELDS)}")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise BadRequest('"text" is required: the words to search for, as a non-empty string')
    mode = body.get("mode")
    if mode is not None and mode not in MODES:
        raise BadRequest(f'"mode" must be one of {", ".join(json.dumps(m) for m in MODES)}, got {json.dumps(mode)}')
    keywords = _strings(body, "keywords")
    if keywords is not None and not any(k.strip() for k in keywords):
        raise BadRequest(
            f'"keywords" must hold some words, got {json.dumps(keywords)}; leave it out to search "text" by full text'
        )
    if keywords is not None and mode == "vector":
        raise BadRequest(
            '"keywords" are what the full-text pass searches: use them with "mode" hybrid or text, or leave "mode" out'
        )
    return {
        "text": text,
        "datasets": _strings(body, "datasets", allow_none=True),
        "where": _optional(body, "where", str, "a SQL predicate as a string"),
        "additional_columns": _strings(body, "additional_columns") or [],
        "limit": _positive(body, "limit", DEFAULT_LIMIT),
        "keywords": keywords,
        "mode": mode,
        "ef_search": _positive(body, "ef_search", None),
        "group": _optional(body, "group", bool, "true (one match per row, the default) or false (the best chunks)") is not False,
    }


def _strings(body: dict, name: str, allow_none: bool = False) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f'"{name}" must be a list of strings, got {json.dumps(value)}')
    if allow_none and not value:
        raise BadRequest(f'"{name}" is empty; leave it out to search every dataset')
    return value


def _optional(body: dict, name: str, kind: type, what: str):
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise BadRequest(f'"{name}" must be {what}, got {json.dumps(value)}')
    return value


def _positive(body: dict, name: str, default: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadRequest(f'"{name}" must be a positive integer, got {json.dumps(value)}')
    return value


def _default_mode(searcher, datasets: list[str], keywords: list[str] | None) -> str:
    """``mode`` when the request leaves it out: hybrid when there are keywords or every dataset has a
    full-text index, else vector (one mode for the whole answer, so its scores compare)."""
    if keywords is not None or all(searcher.reader(d).has_text for d in datasets):
        return "hybrid"
    return "vector"


def _built(searcher, dataset: str) -> bool:
    try:
        searcher.reader(dataset)
    except IndexNotBuiltError:
        return False
    return True


def _health(searcher, names: tuple[str, ...], lock: threading.Lock) -> list[dict]:
    states = []
    with lock:
        for dataset in names:
            try:
                reader = searcher.reader(dataset)
            except IndexNotBuiltError:
                states.append({"dataset": dataset, "built": False})
                continue
            states.append({"dataset": dataset, "built": True, "vectors": len(reader), "served_seq": reader.served_seq})
    return states


def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the server in the foreground on the spec and home of ``QUIVER_DATASETS``/``QUIVER_HOME``."""
    import uvicorn  # only a server needs it

    app = create_app(searcher(), load_spec())
    uvicorn.run(app, host=host, port=port, log_level="info")
