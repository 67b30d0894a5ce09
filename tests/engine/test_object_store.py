"""resources/object_store.py against a real S3 server (moto's, started on 127.0.0.1 by tests/servers.py):
each operation, conditional writes under a race, and each kind of bad input with its message."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from quiver.resources.files import TEMP_MARKER
from quiver.resources.object_store import (
    PROBE_FOLDER,
    ConcurrentPublishError,
    ConditionalWritesUnsupportedError,
    CredentialsRejectedError,
    MissingCredentialsError,
    NoSuchBucketError,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreConfigError,
    ObjectStoreURLError,
    StoreUnreachableError,
    open_store,
)
from tests.servers import aws_env, create_bucket, header_stripping_proxy, moto_server

WRITERS = 8
ROUNDS = 25


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_server() as server:
        yield server.url


@pytest.fixture
def store(s3) -> ObjectStore:
    bucket = f"idx-{uuid.uuid4().hex[:12]}"
    create_bucket(s3, bucket)
    return open_store(f"s3://{bucket}/quiver/products", aws_env(s3))


def manifest(writer: str) -> bytes:
    """A manifest body as the index will write it: unique per publish (see the module's ABA note)."""
    return json.dumps({"writer": writer, "publish_id": uuid.uuid4().hex}).encode()


# -- each operation -------------------------------------------------------------------------------
def test_put_get_head_list_delete(store, tmp_path):
    etag = store.put("MANIFEST.json", b'{"seq": 1}')
    local = tmp_path / "segment.parquet"
    local.write_bytes(b"segment bytes")
    store.put("log/00000001-00000002-a.parquet", local)  # a local file, streamed
    store.put("log/00000003-00000004-b.parquet", b"more")
    store.put("snapshots/4/index.usearch", b"vectors")

    assert store.get("MANIFEST.json") == (b'{"seq": 1}', etag)
    info = store.head("log/00000001-00000002-a.parquet")
    assert (info.size, info.etag) == (13, f'"{hashlib.md5(b"segment bytes").hexdigest()}"')
    assert [i.path for i in store.list("log")] == ["log/00000001-00000002-a.parquet", "log/00000003-00000004-b.parquet"]
    assert [i.path for i in store.list("log/")] == [i.path for i in store.list("log")]
    assert len(store.list()) == 4

    # the prefix is the store's whole world: a sibling prefix in the same bucket sees none of it
    sibling = ObjectStore(f"s3://{store.location.bucket}/quiver/other", aws_env(store.endpoint))
    assert sibling.list() == []

    store.delete("log/00000001-00000002-a.parquet")
    store.delete("log/00000001-00000002-a.parquet")  # already gone: fine
    assert [i.path for i in store.list("log")] == ["log/00000003-00000004-b.parquet"]
    with pytest.raises(ObjectNotFoundError, match=rf"{store.url}/log/00000001-00000002-a.parquet: no such object"):
        store.get("log/00000001-00000002-a.parquet")
    with pytest.raises(ObjectNotFoundError):
        store.head("nothing-here")
    with pytest.raises(FileNotFoundError, match="no such local file to upload"):
        store.put("log/x.parquet", tmp_path / "not-written.parquet")


def test_download_streams_a_large_object_whole(store, tmp_path):
    data = os.urandom(12 << 20)  # over obstore's multipart threshold on the way up, several chunks down
    source = tmp_path / "big.usearch"
    source.write_bytes(data)
    store.put("snapshots/9/index.usearch", source)
    target = tmp_path / "cache" / "index.usearch"
    info = store.download("snapshots/9/index.usearch", target)
    assert info.size == len(data) and hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(TEMP_MARKER)]
    with pytest.raises(ObjectNotFoundError):
        store.download("snapshots/9/missing", tmp_path / "cache" / "missing")
    assert sorted(p.name for p in target.parent.iterdir()) == ["index.usearch"]


def test_put_if_absent_creates_once(store):
    first = store.put_if_absent("MANIFEST.json", manifest("a"))
    assert first is not None
    assert store.put_if_absent("MANIFEST.json", manifest("b")) is None
    assert json.loads(store.get("MANIFEST.json")[0])["writer"] == "a"
    assert store.list(PROBE_FOLDER) == []  # the conditional-write probe cleans up after itself


def test_put_if_match_publishes_only_from_the_current_etag(store):
    first = store.put_if_absent("MANIFEST.json", manifest("a"))
    second = store.put_if_match("MANIFEST.json", manifest("b"), first)
    assert second != first and store.get("MANIFEST.json")[1] == second
    with pytest.raises(ConcurrentPublishError) as stale:
        store.put_if_match("MANIFEST.json", manifest("c"), first)
    message = str(stale.value)
    assert f"{store.url}/MANIFEST.json was replaced by another writer" in message
    assert "read it again and publish on top of the new state" in message
    assert json.loads(store.get("MANIFEST.json")[0])["writer"] == "b"
    store.delete("MANIFEST.json")
    with pytest.raises(ConcurrentPublishError, match="was deleted by another writer"):
        store.put_if_match("MANIFEST.json", manifest("d"), second)


def test_identical_bytes_give_the_old_etag_back(store):
    """Why a manifest carries a unique publish id: without one, A -> B -> A makes a writer that read
    the first A win its If-Match, over B's publish (ABA)."""
    same = b'{"seq": 7}'
    old = store.put_if_absent("MANIFEST.json", same)
    store.put_if_match("MANIFEST.json", b'{"seq": 8}', old)
    assert store.put("MANIFEST.json", same) == old  # the ETag is the MD5 of the bytes
    store.put_if_match("MANIFEST.json", b'{"seq": 9}', old)  # a stale writer wins: the hazard


def race(store: ObjectStore, path: str, etag: str | None) -> dict[str, object]:
    """WRITERS threads publish to ``path`` at one moment (create when ``etag`` is None, else replace
    from ``etag``): writer -> its bytes when it won, else what it was told."""
    start = threading.Barrier(WRITERS)
    outcome: dict[str, object] = {}

    def publish(writer: str) -> None:
        body = manifest(writer)
        start.wait()
        try:
            if etag is None:
                outcome[writer] = body if store.put_if_absent(path, body) else "lost"
            else:
                store.put_if_match(path, body, etag)
                outcome[writer] = body
        except ConcurrentPublishError as exc:
            outcome[writer] = str(exc)

    threads = [threading.Thread(target=publish, args=(f"w{i}",)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcome


@pytest.mark.parametrize("kind", ["create", "replace"])
def test_racing_writers_exactly_one_publishes(store, kind):
    """Eight writers publish at the same moment from the same state, round after round: each round
    exactly one wins, the others are told, and the object holds the winner's bytes."""
    for round_ in range(ROUNDS):
        path = f"race/{round_}/MANIFEST.json"
        outcome = race(store, path, None if kind == "create" else store.put(path, manifest("base")))
        winners = [body for body in outcome.values() if isinstance(body, bytes)]
        assert len(outcome) == WRITERS and len(winners) == 1, (round_, outcome)
        assert store.get(path)[0] == winners[0]
        losers = [o for o in outcome.values() if not isinstance(o, bytes)]
        if kind == "replace":
            assert all(f"{store.url}/{path} was replaced by another writer" in o for o in losers), losers


# -- bad input ------------------------------------------------------------------------------------
def test_an_unreachable_endpoint_is_named_with_the_fix():
    with moto_server() as server:
        create_bucket(server.url, "idx")
        store = open_store("s3://idx/quiver", aws_env(server.url))
        store.put("MANIFEST.json", b"{}")
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreUnreachableError) as failed:
            store.get("MANIFEST.json")
    assert time.monotonic() - started < 10  # a few quick retries, not minutes
    message = str(failed.value)
    assert message.startswith(f"s3://idx/quiver/MANIFEST.json: cannot reach the object store at {server.url}")
    assert "check that it is up and that AWS_ENDPOINT_URL names it" in message


def test_a_missing_bucket_is_named_with_the_fix(s3):
    with pytest.raises(NoSuchBucketError) as failed:
        open_store("s3://no-such-bucket/quiver", aws_env(s3))
    assert str(failed.value) == (
        f"s3://no-such-bucket/quiver: the bucket 'no-such-bucket' does not exist at {s3}; "
        "create it (aws s3 mb s3://no-such-bucket) or fix the bucket in the URL"
    )
    store = ObjectStore("s3://no-such-bucket/quiver", aws_env(s3))  # unchecked: the first write says it
    with pytest.raises(NoSuchBucketError, match="the bucket 'no-such-bucket' does not exist"):
        store.put("MANIFEST.json", b"{}")


def test_missing_credentials_are_refused_before_any_request(s3):
    with pytest.raises(MissingCredentialsError) as failed:
        ObjectStore("s3://idx/quiver", aws_env(s3, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None))
    message = str(failed.value)
    assert message.startswith("s3://idx/quiver: no credentials for the object store; set AWS_ACCESS_KEY_ID and")
    assert "AWS_SKIP_SIGNATURE=true for a public bucket" in message
    with pytest.raises(MissingCredentialsError, match="AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"):
        ObjectStore("s3://idx/quiver", aws_env(s3, AWS_SECRET_ACCESS_KEY=None))
    # anonymous access is a choice, not an accident
    ObjectStore(
        "s3://idx/quiver", aws_env(s3, AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_SKIP_SIGNATURE="true")
    )


def test_rejected_credentials_are_named_with_the_fix():
    with moto_server(check_credentials=True) as server, pytest.raises(CredentialsRejectedError) as failed:
        open_store("s3://idx/quiver", aws_env(server.url, AWS_ACCESS_KEY_ID="AKIAUNKNOWN"))
    message = str(failed.value)
    assert message.startswith(
        f"s3://idx/quiver: the object store at {server.url} refused the credentials (InvalidAccessKeyId"
    )
    assert "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message


@pytest.mark.parametrize("url", ["s3:/idx/quiver", "gs://idx/quiver", "s3://", "/var/lib/quiver", "s3://idx/q?x=1"])
def test_a_bad_url_is_refused(url, s3):
    with pytest.raises(ObjectStoreURLError, match=r"is not an object store URL; write it as s3://bucket/prefix"):
        ObjectStore(url, aws_env(s3))


def test_plain_http_needs_to_be_asked_for(s3):
    with pytest.raises(
        ObjectStoreConfigError, match=rf"s3://idx: the endpoint {s3} is plain HTTP; set AWS_ALLOW_HTTP=true"
    ):
        ObjectStore("s3://idx", aws_env(s3, AWS_ALLOW_HTTP=None))


def test_a_store_that_ignores_conditional_writes_is_refused(s3):
    create_bucket(s3, "plain")
    with header_stripping_proxy(s3) as endpoint:
        store = open_store("s3://plain/quiver", aws_env(endpoint))
        store.put("log/1.parquet", b"x")  # plain reads and writes go through
        assert store.get("log/1.parquet")[0] == b"x"
        with pytest.raises(ConditionalWritesUnsupportedError) as failed:
            store.put_if_absent("MANIFEST.json", manifest("a"))
        with pytest.raises(ConditionalWritesUnsupportedError):
            store.put_if_match("MANIFEST.json", manifest("a"), '"anything"')
        assert [i.path for i in store.list()] == ["log/1.parquet"]  # no manifest, no probe left behind
    message = str(failed.value)
    assert message.startswith(f"s3://plain/quiver: the object store at {endpoint} does not honour conditional writes")
    assert "If-None-Match: * (a second create replaced the object)" in message
    assert "If-Match (a PUT with a wrong ETag replaced the object)" in message
    assert "two writers could both publish" in message
