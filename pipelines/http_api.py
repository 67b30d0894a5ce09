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

Errors are ``{"error": "..."}``: 400 for a bad request, 401 for a missing or wrong API key, 404 for
an unknown dataset or one with no index yet, 413 for a body over the size limit, 504 for a search
over the time limit, 500 otherwise. ``GET /openapi.json`` describes all of it (OpenAPI 3.1).

Limits, each a module constant, overridden by an environment variable, overridden in turn by an
argument of ``serve()`` (and its ``python -m quiver serve`` flag):

    MAX_BODY_BYTES  64 KiB   QUIVER_MAX_BODY_BYTES    --max-body-bytes   413 above it
    MAX_LIMIT       1000     QUIVER_MAX_LIMIT         --max-limit        400 for a larger ``limit``
    MAX_TEXT_CHARS  10000    QUIVER_MAX_TEXT_CHARS    --max-text-chars   400 for a longer ``text``, or
                                                                         ``keywords`` longer in all
    TIMEOUT_S       30       QUIVER_TIMEOUT_S         --timeout          504 past it (seconds, queueing
                                                                         included; the search itself
                                                                         runs on, its answer dropped)
    WORKERS         32       QUIVER_WORKERS           --workers          requests in progress at once
                                                                         (at least the cores)
    EMBED_BATCH     8        QUIVER_EMBED_BATCH       --embed-batch      query texts per embedder call
                                                                         (1: each query alone)

API keys, as in Spice: header ``X-API-Key``; the keys come from ``QUIVER_API_KEYS`` (comma-separated)
and ``QUIVER_API_KEYS_FILE`` (one key a line; blank lines and ``#`` comments skipped), or
``serve(api_keys_file=...)`` / ``--api-keys-file``. With keys, ``/v1/search`` answers 401 without a
right one (compared in constant time); ``/health`` and ``/openapi.json`` stay open (probes, clients).
Without keys the server only binds to loopback: any other ``--host`` refuses to start (exit 2).

Searches run in parallel on a pool of ``WORKERS`` threads (usearch releases the GIL; the reader's
state swap is atomic; its reader cache, text index build and row filter each have a lock). One
thing is shared per graph: reader.py sets ``expansion_search`` on the usearch index before each
search, so a request that sets its own ``ef_search`` runs alone (``_SharedOrAlone`` below).

Query texts are embedded in micro-batches (``resources/embedding/micro_batch.py``): a query that
finds the model idle is embedded at once, alone; queries that arrive while it runs wait and are
embedded together, up to ``EMBED_BATCH`` texts in one call, which costs each about half the CPU of
a call of its own. Most of a request's time is that embedding; ``make bench-load`` measures the
whole (README, "Load").
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from quiver.pipelines.query import searcher
from quiver.resources.embedding.micro_batch import MAX_BATCH, MicroBatcher
from quiver.resources.index.errors import IndexNotBuiltError
from quiver.resources.search import MODES, SearchError, embedded_texts
from quiver.resources.spec import UnknownDatasetError, load_spec
from quiver.resources.values import jsonable

FIELDS = ("text", "datasets", "where", "additional_columns", "limit", "keywords", "mode", "ef_search", "group")
HYBRID_FIELDS = ("fused_score", "text_score", "vector_rank", "text_rank")  # beside "score", in mode hybrid
CHUNK_FIELDS = ("chunk", "chunk_number", "chunk_start", "chunk_end")
DEFAULT_LIMIT = 10
MAX_BODY_BYTES = 64 * 1024
MAX_LIMIT = 1000
MAX_TEXT_CHARS = 10_000
TIMEOUT_S = 30.0
EMBED_BATCH = MAX_BATCH
# Enough requests in progress for a batch to fill while the one before it runs (the threads waiting
# for their batch cost nothing). make bench-load at 16 clients: 32 and 16 within noise of each other,
# the cores alone (2 here) capped batches at 2 texts and 191 queries/s against about 300; letting
# only the cores search at once (a slot given back while waiting for the batch) measured no better.
WORKERS = max(os.cpu_count() or 1, 4 * EMBED_BATCH)
API_KEY_HEADER = "X-API-Key"
ENV_API_KEYS, ENV_API_KEYS_FILE = "QUIVER_API_KEYS", "QUIVER_API_KEYS_FILE"


@dataclass(frozen=True)
class Limits:
    """What one request may ask, and how many run at once (see the module docstring)."""

    max_body_bytes: int = MAX_BODY_BYTES
    max_limit: int = MAX_LIMIT
    max_text_chars: int = MAX_TEXT_CHARS
    timeout_s: float = TIMEOUT_S
    workers: int = WORKERS
    embed_batch: int = EMBED_BATCH

    @classmethod
    def from_env(cls, env=None, **given) -> Limits:
        """The constants, overridden by ``QUIVER_<FIELD>`` variables, overridden by ``given`` (None: not given)."""
        env = os.environ if env is None else env
        limits = cls()
        for f in fields(cls):
            raw = env.get(f"QUIVER_{f.name.upper()}")
            value = given.get(f.name)
            if value is None and raw:
                try:
                    value = type(getattr(limits, f.name))(raw)
                except ValueError:
                    raise ValueError(f"QUIVER_{f.name.upper()} must be a positive number, got {raw!r}") from None
            if value is not None:
                if value <= 0:
                    raise ValueError(f"{f.name} must be positive, got {value!r}")
                limits = replace(limits, **{f.name: value})
        return limits


def api_keys(env=None, keys_file: str | Path | None = None) -> tuple[str, ...]:
    """The accepted keys: ``QUIVER_API_KEYS`` (comma-separated) and the lines of ``keys_file`` (else of
    ``QUIVER_API_KEYS_FILE``); none means the server is open (and then only on loopback)."""
    env = os.environ if env is None else env
    keys = [k.strip() for k in env.get(ENV_API_KEYS, "").split(",")]
    path = keys_file or env.get(ENV_API_KEYS_FILE)
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as error:
            raise ValueError(f"cannot read the API keys file {path}: {error.strerror or error}") from None
        keys += [line.strip() for line in lines if not line.strip().startswith("#")]
    return tuple(dict.fromkeys(k for k in keys if k))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


class _SharedOrAlone:
    """Many holders at once, or one alone (a readers-writer lock; the alone ones wait their turn)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._shared = 0
        self._alone = False
        self._waiting_alone = 0

    @contextlib.contextmanager
    def held(self, alone: bool):
        with self._cond:
            if alone:
                self._waiting_alone += 1
                self._cond.wait_for(lambda: not self._alone and self._shared == 0)
                self._waiting_alone -= 1
                self._alone = True
            else:
                self._cond.wait_for(lambda: not self._alone and self._waiting_alone == 0)
                self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                if alone:
                    self._alone = False
                else:
                    self._shared -= 1
                self._cond.notify_all()


class BadRequest(ValueError):
    """The request body is not a search request; the message says which field is wrong."""


class TooLarge(ValueError):
    """The request body is over ``max_body_bytes``."""


def create_app(searcher, spec=None, limits: Limits | None = None, keys: tuple[str, ...] = ()) -> Starlette:
    """A Starlette app over ``searcher``; ``spec`` (a QuiverSpec) names the datasets and their
    embedding columns, so matches can carry the embedded text as ``value``. ``keys``: the accepted
    API keys (none: no authentication)."""
    limits = limits or Limits()
    names = tuple(spec.names) if spec is not None else tuple(searcher.datasets or ())
    texts = {**(embedded_texts(spec) if spec is not None else {}), **searcher.texts}
    own = searcher.embed
    if isinstance(getattr(own, "__self__", None), MicroBatcher):  # a searcher served twice (tests): batched once
        own = own.__self__.inner
    searcher.embed = MicroBatcher(own, limits.embed_batch).embed
    pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="quiver-search")
    ef_lock = _SharedOrAlone()  # a request's own ef_search is set on the shared graph: it runs alone
    encoded_keys = [k.encode() for k in keys]
    description = openapi(limits, bool(keys))

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
        with ef_lock.held(alone=request["ef_search"] is not None):
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

    def authorized(request: Request) -> JSONResponse | None:
        """None when the request may go on, else the 401 answer."""
        if not encoded_keys:
            return None
        given = request.headers.get(API_KEY_HEADER)
        if not given:
            return _error(401, f"this server needs an API key: send it in the {API_KEY_HEADER} header")
        given_bytes = given.encode()
        right = False
        for key in encoded_keys:  # every key compared, each in constant time
            right |= hmac.compare_digest(given_bytes, key)
        return None if right else _error(401, f"the API key in the {API_KEY_HEADER} header is not valid")

    async def search(request: Request) -> JSONResponse:
        started = time.perf_counter()
        refused = authorized(request)
        if refused is not None:
            return refused
        try:
            body = _parse(await _read_body(request, limits.max_body_bytes), limits)
            work = asyncio.get_running_loop().run_in_executor(pool, search_all, body)
            matches = await asyncio.wait_for(work, limits.timeout_s)
        except TooLarge as error:
            return _error(413, error)
        except TimeoutError:
            return _error(504, f"the search took over {limits.timeout_s:g} s, the server's time limit for one request")
        except (UnknownDatasetError, IndexNotBuiltError) as error:
            return _error(404, error)
        except (BadRequest, SearchError) as error:
            return _error(400, error)
        duration_ms = round((time.perf_counter() - started) * 1000)
        return JSONResponse({"matches": jsonable(matches), "duration_ms": duration_ms})

    async def health(request: Request) -> JSONResponse:
        states = await asyncio.get_running_loop().run_in_executor(pool, _health, searcher, names)
        return JSONResponse({"status": "ok", "datasets": states})

    async def openapi_json(request: Request) -> JSONResponse:
        return JSONResponse(description)

    async def server_error(request: Request, error: Exception) -> JSONResponse:
        return _error(500, error)  # Starlette re-raises it after, so uvicorn logs the traceback

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    return Starlette(
        routes=[
            Route("/v1/search", search, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
        ],
        exception_handlers={Exception: server_error},
        lifespan=lifespan,
    )


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused (TooLarge) as soon as it is known to be over ``max_bytes``."""
    too_large = TooLarge(f"the body is over {max_bytes} bytes, the server's limit for one request")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, error: Exception | str) -> JSONResponse:
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    return JSONResponse({"error": str(message)}, status_code=status)


def _parse(raw: bytes, limits: Limits | None = None) -> dict:
    """The request body, checked field by field; defaults filled in."""
    limits = limits or Limits()
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
    if len(text) > limits.max_text_chars:
        raise BadRequest(f'"text" has {len(text)} characters, over the limit of {limits.max_text_chars}')
    mode = body.get("mode")
    if mode is not None and mode not in MODES:
        raise BadRequest(f'"mode" must be one of {", ".join(json.dumps(m) for m in MODES)}, got {json.dumps(mode)}')
    keywords = _strings(body, "keywords")
    if keywords is not None and not any(k.strip() for k in keywords):
        raise BadRequest(
            f'"keywords" must hold some words, got {json.dumps(keywords)}; leave it out to search "text" by full text'
        )
    if keywords is not None and sum(len(k) for k in keywords) > limits.max_text_chars:
        raise BadRequest(
            f'"keywords" have {sum(len(k) for k in keywords)} characters in all, over the limit of {limits.max_text_chars}'
        )
    if keywords is not None and mode == "vector":
        raise BadRequest(
            '"keywords" are what the full-text pass searches: use them with "mode" hybrid or text, or leave "mode" out'
        )
    limit = _positive(body, "limit", DEFAULT_LIMIT)
    if limit > limits.max_limit:
        raise BadRequest(f'"limit" must be at most {limits.max_limit}, got {limit}')
    return {
        "text": text,
        "datasets": _strings(body, "datasets", allow_none=True),
        "where": _optional(body, "where", str, "a SQL predicate as a string"),
        "additional_columns": _strings(body, "additional_columns") or [],
        "limit": limit,
        "keywords": keywords,
        "mode": mode,
        "ef_search": _positive(body, "ef_search", None),
        "group": _optional(body, "group", bool, "true (one match per row, the default) or false (the best chunks)")
        is not False,
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


def _health(searcher, names: tuple[str, ...]) -> list[dict]:
    states = []
    for dataset in names:
        try:
            reader = searcher.reader(dataset)
        except IndexNotBuiltError:
            states.append({"dataset": dataset, "built": False})
            continue
        states.append({"dataset": dataset, "built": True, "vectors": len(reader), "served_seq": reader.served_seq})
    return states


def openapi(limits: Limits | None = None, keys: bool = False) -> dict:
    """The OpenAPI 3.1 description served at ``GET /openapi.json`` (its limits are this server's)."""
    limits = limits or Limits()
    string_list = {"type": "array", "items": {"type": "string"}}
    nullable_int = {"type": ["integer", "null"]}
    match = {
        "type": "object",
        "required": ["value", "score", "dataset", "primary_key", "metadata"],
        "properties": {
            "value": {"description": "the embedded text (or the chunk's, or the primary key)"},
            "score": {"type": "number", "description": "vector similarity; BM25 in mode text"},
            "dataset": {"type": "string"},
            "primary_key": {"type": "object"},
            "metadata": {"type": "object", "description": "the additional_columns asked for"},
            "fused_score": {"type": "number", "description": "mode hybrid: reciprocal rank fusion"},
            "text_score": {"type": ["number", "null"], "description": "mode hybrid: BM25, null if not found"},
            "vector_rank": nullable_int,
            "text_rank": nullable_int,
            "chunk": {
                "type": "object",
                "description": 'with "group": false: the chunk\'s number, start and end',
                "properties": {"number": nullable_int, "start": nullable_int, "end": nullable_int},
            },
        },
        "additionalProperties": False,
    }
    schemas = {
        "SearchRequest": {
            "type": "object",
            "required": ["text"],
            "additionalProperties": False,
            "properties": {
                "text": {"type": "string", "minLength": 1, "maxLength": limits.max_text_chars},
                "datasets": {**string_list, "minItems": 1, "description": "default: every dataset with an index"},
                "where": {"type": "string", "description": "a SQL predicate over served columns"},
                "additional_columns": {**string_list, "description": "served columns returned under metadata"},
                "limit": {"type": "integer", "minimum": 1, "maximum": limits.max_limit, "default": DEFAULT_LIMIT},
                "keywords": {**string_list, "description": "what the full-text pass searches; makes it hybrid"},
                "mode": {"enum": list(MODES)},
                "ef_search": {"type": "integer", "minimum": 1},
                "group": {"type": "boolean", "default": True},
            },
        },
        "Match": match,
        "SearchResponse": {
            "type": "object",
            "required": ["matches", "duration_ms"],
            "additionalProperties": False,
            "properties": {
                "matches": {"type": "array", "items": {"$ref": "#/components/schemas/Match"}},
                "duration_ms": {"type": "integer", "minimum": 0},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "datasets"],
            "additionalProperties": False,
            "properties": {
                "status": {"const": "ok"},
                "datasets": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["dataset", "built"],
                        "additionalProperties": False,
                        "properties": {
                            "dataset": {"type": "string"},
                            "built": {"type": "boolean"},
                            "vectors": {"type": "integer"},
                            "served_seq": {"type": "integer"},
                        },
                    },
                },
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {"error": {"type": "string", "description": "what went wrong, in one message"}},
        },
    }

    def answer(what: str, schema: str) -> dict:
        return {
            "description": what,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }

    errors = {
        "400": answer("a bad request: the message names the field", "Error"),
        "404": answer("an unknown dataset, or one with no index yet", "Error"),
        "413": answer(f"a body over {limits.max_body_bytes} bytes", "Error"),
        "500": answer("a server error", "Error"),
        "504": answer(f"a search over {limits.timeout_s:g} s", "Error"),
    }
    if keys:
        errors["401"] = answer(f"a missing or wrong {API_KEY_HEADER} header", "Error")
    search_op = {
        "summary": "Search datasets by vector, full text or both (Spice's search API)",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}}},
        },
        "responses": {"200": answer("the matches, best first", "SearchResponse"), **errors},
    }
    description = {
        "openapi": "3.1.0",
        "info": {"title": "quiver", "version": "1", "description": "Spice's POST /v1/search over quiver's indexes"},
        "paths": {
            "/v1/search": {"post": search_op},
            "/health": {
                "get": {"summary": "Each dataset's served state", "responses": {"200": answer("ok", "Health")}}
            },
        },
        "components": {"schemas": schemas},
    }
    if keys:
        description["components"]["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
        }
        search_op["security"] = [{"apiKey": []}]
    return description


def serve(host: str = "127.0.0.1", port: int = 8000, api_keys_file: str | Path | None = None, **limits) -> None:
    """Run the server in the foreground on the spec and home of ``QUIVER_DATASETS``/``QUIVER_HOME``.

    ``limits``: fields of ``Limits`` (None: the environment's, else the constant). Without API keys
    it refuses (ValueError) any host but loopback."""
    keys = api_keys(keys_file=api_keys_file)
    if not keys and not is_loopback(host):
        raise ValueError(
            f"serving on {host} needs API keys: set {ENV_API_KEYS} or {ENV_API_KEYS_FILE} (or --api-keys-file), "
            "or listen on 127.0.0.1"
        )
    chosen = Limits.from_env(**limits)
    import uvicorn  # only a server needs it

    app = create_app(searcher(), load_spec(), chosen, keys)
    uvicorn.run(app, host=host, port=port, log_level="info")
