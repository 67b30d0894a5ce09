"""resources/index/remote.py against a real S3 API (moto's server, started on 127.0.0.1): a writer
publishes through the bucket's manifest, readers on other caches serve the same state, racing
writers never both publish, orphans are cleaned on the next write, and each fault is a clear error
with the last published state still serving."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from quiver.resources.index import IndexReader, read_stats, remote
from quiver.resources.index.errors import IndexNotBuiltError
from quiver.resources.index.manifest import MANIFEST_NAME
from quiver.resources.index.remote import REMOTE_KEY, RemoteIndex, RemoteIndexStore, RemoteMirror
from quiver.resources.object_store import (
    ConcurrentPublishError,
    ConditionalWritesUnsupportedError,
    MissingCredentialsError,
    ObjectStore,
    StoreUnreachableError,
)
from tests.invariants import check_bucket_at_rest
from tests.servers import aws_env, create_bucket, header_stripping_proxy, moto_server

DIM = 8


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_server() as server:
        yield server.url


@pytest.fixture(autouse=True)
def fresh_stores(monkeypatch):
    """Each test makes its stores from its own environment (``store_for`` keeps one per URL)."""
    monkeypatch.setattr(remote, "_STORES", {})


@pytest.fixture
def url(s3, monkeypatch) -> str:
    for name, value in aws_env(s3).items():
        monkeypatch.setenv(name, value)
    bucket = f"idx-{uuid.uuid4().hex[:12]}"
    create_bucket(s3, bucket)
    return f"s3://{bucket}/quiver/products"


def writer(kit, url: str, local: Path, **settings) -> RemoteIndexStore:
    store = RemoteIndexStore(url, local, dataset="products", identity=kit.make_identity(DIM), params=kit.FAST_PARAMS,
                             primary_key=kit.PK, keep_previous=False, **settings)
    store.open()
    return store


def answers(reader: IndexReader, queries: np.ndarray) -> list[list[int]]:
    reader.refresh()
    return [list(reader.search(query, k=5).keys) for query in queries]


def bucket_manifest(url: str) -> dict:
    return json.loads(ObjectStore(url).get(MANIFEST_NAME)[0])


def test_readers_on_other_caches_serve_what_the_writer_published(kit, url, tmp_path):
    work = kit.Workload(seed=1, dim=DIM)
    store = writer(kit, url, tmp_path / "writer")
    mirrors = [RemoteMirror(url, tmp_path / f"reader-{i}", poll_seconds=0) for i in range(2)]
    queries = np.stack([kit.random_unit(work.rng, DIM) for _ in range(4)])
    for step, (inserts, updates, deletes) in enumerate([(60, 0, 0), (20, 15, 10), (10, 10, 10)]):
        store.append_segment(*work.batch(inserts, updates, deletes))
        if step == 1:
            assert store.take_snapshot() is not None
        for mirror in mirrors:
            assert mirror.pull()
            kit.assert_state_matches(kit.read_state(mirror.local), work.model)
        expected = answers(IndexReader(store.root), queries)
        for mirror in mirrors:
            assert answers(IndexReader(mirror.local), queries) == expected
    assert not mirrors[0].pull(), "an unchanged manifest downloads nothing"
    state = check_bucket_at_rest(url, tmp_path / "copy")
    assert {key: entry.pk for key, entry in state.items()} == {key: row.pk for key, row in work.model.rows.items()}
    # the bucket's manifest names exactly the segments after the snapshot
    listed = [entry["name"] for entry in bucket_manifest(url)[REMOTE_KEY]["segments"]]
    assert len(listed) == 1 and bucket_manifest(url)["snapshot"]["dir"].startswith("snapshots/")


def test_a_writer_on_a_fresh_machine_continues_from_the_bucket(kit, url, tmp_path):
    work = kit.Workload(seed=2, dim=DIM)
    first = writer(kit, url, tmp_path / "machine-a")
    first.append_segment(*work.batch(40))
    first.take_snapshot()
    first.append_segment(*work.batch(5, 5, 5))
    second = writer(kit, url, tmp_path / "machine-b")  # an empty local disk: a new pod
    assert second.last_seq() == work.last_seq
    second.append_segment(*work.batch(5, 5, 5))
    second.take_snapshot()
    kit.assert_state_matches(kit.read_state(second.root), work.model)
    check_bucket_at_rest(url, tmp_path / "copy")
    kit.assert_state_matches(kit.read_state(tmp_path / "copy"), work.model)


def test_of_two_writers_racing_from_one_state_exactly_one_publishes(kit, url, tmp_path):
    work = kit.Workload(seed=3, dim=DIM)
    base = writer(kit, url, tmp_path / "base")
    base.append_segment(*work.batch(30))
    a, b = (RemoteIndex(url, tmp_path / name) for name in ("a", "b"))
    for side in (a, b):
        side.materialize(side.read_published(), keep_unpublished=False)
    before = bucket_manifest(url)
    a.push()  # a publishes (its state equals the bucket's, under a new publish id)
    with pytest.raises(ConcurrentPublishError, match="replaced by another writer"):
        b.push()
    after = bucket_manifest(url)
    assert after[REMOTE_KEY]["publish_id"] not in (before[REMOTE_KEY]["publish_id"],)
    assert after == json.loads((a.local / MANIFEST_NAME).read_bytes())


def test_a_second_writer_creating_the_index_is_refused(kit, url, tmp_path):
    a, b = RemoteIndex(url, tmp_path / "a"), RemoteIndex(url, tmp_path / "b")
    writer(kit, url, tmp_path / "first")  # creates the bucket's manifest
    for side in (a, b):
        side.local.mkdir()
        (side.local / MANIFEST_NAME).write_bytes((tmp_path / "first" / MANIFEST_NAME).read_bytes())
    with pytest.raises(ConcurrentPublishError, match="created by another writer"):
        a.push()  # etag None: it believes the bucket empty


def test_orphans_of_an_unpublished_snapshot_are_deleted_by_the_next_write(kit, url, tmp_path):
    work = kit.Workload(seed=4, dim=DIM)
    store = writer(kit, url, tmp_path / "writer")
    store.append_segment(*work.batch(50))
    published = bucket_manifest(url)
    # a snapshot half uploaded and never published (its writer died before the manifest's PUT),
    # and a segment uploaded but never published
    for name in ("index.usearch", "rows.parquet"):
        ObjectStore(url).put(f"snapshots/{work.last_seq:020d}-deadbeef0000/{name}", b"partial")
    ObjectStore(url).put(f"log/{work.last_seq + 1:020d}-{work.last_seq + 3:020d}.parquet", b"never published")
    # and one under the very name the next segment takes (a killed run's, from other bytes)
    ObjectStore(url).put(f"log/{work.last_seq + 1:020d}-{work.last_seq + 15:020d}.parquet", b"stale bytes")
    assert bucket_manifest(url) == published
    mirror = RemoteMirror(url, tmp_path / "reader", poll_seconds=0)
    mirror.pull()
    kit.assert_state_matches(kit.read_state(mirror.local), work.model)  # readers serve the published state
    store.append_segment(*work.batch(5, 5, 5))
    store.take_snapshot()
    check_bucket_at_rest(url, tmp_path / "copy")  # nothing left the manifest does not name


def test_an_unreachable_bucket_is_a_clear_error_and_readers_keep_their_copy(kit, url, tmp_path, monkeypatch):
    work = kit.Workload(seed=5, dim=DIM)
    store = writer(kit, url, tmp_path / "writer")
    store.append_segment(*work.batch(20))
    mirror = RemoteMirror(url, tmp_path / "reader", poll_seconds=0)
    mirror.pull()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    with pytest.raises(StoreUnreachableError, match=r"s3://.*/other.*cannot reach"):
        RemoteIndexStore(url.replace("products", "other"), tmp_path / "cold", dataset="other",
                         identity=kit.make_identity(DIM), params=kit.FAST_PARAMS, primary_key=kit.PK).open()
    mirror.remote.store = ObjectStore(url)  # the bucket gone from under a reader that has a copy
    assert mirror.pull() is False
    kit.assert_state_matches(kit.read_state(mirror.local), work.model)
    stranger = RemoteMirror(url, tmp_path / "new-reader", poll_seconds=0, store=ObjectStore(url))
    with pytest.raises(StoreUnreachableError):
        stranger.pull()


def test_missing_credentials_name_the_url_and_the_fix(kit, url, tmp_path, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    with pytest.raises(MissingCredentialsError, match=r"s3://.*/nocreds.*AWS_ACCESS_KEY_ID"):
        RemoteIndexStore(url.replace("products", "nocreds"), tmp_path / "w", dataset="nocreds",
                         identity=kit.make_identity(DIM), params=kit.FAST_PARAMS, primary_key=kit.PK)


def test_a_reader_of_an_index_never_built_is_told_to_build_it(url, tmp_path):
    with pytest.raises(IndexNotBuiltError, match="materialize"):
        RemoteMirror(url, tmp_path / "reader", poll_seconds=0).pull()


def test_a_bucket_without_conditional_writes_publishes_nothing(kit, url, s3, tmp_path, monkeypatch):
    work = kit.Workload(seed=6, dim=DIM)
    store = writer(kit, url, tmp_path / "writer")
    store.append_segment(*work.batch(20))
    before = bucket_manifest(url)
    with header_stripping_proxy(s3) as endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setattr(remote, "_STORES", {})
        plain = RemoteIndexStore(url, tmp_path / "through-proxy", dataset="products", identity=kit.make_identity(DIM),
                                 params=kit.FAST_PARAMS, primary_key=kit.PK, keep_previous=False)
        with pytest.raises(ConditionalWritesUnsupportedError, match=r"s3://.*/products.*does not honour conditional"):
            plain.append_segment(*work.batch(5))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
    assert bucket_manifest(url) == before  # nothing published; readers serve the last state
    names = {info.path for info in ObjectStore(url).list()}
    assert not any(name.startswith("log/") and name.endswith(f"{work.last_seq:020d}.parquet") for name in names)


def test_a_manifest_changed_between_sync_and_publish_is_refused_and_the_winner_serves(kit, url, tmp_path, monkeypatch):
    work = kit.Workload(seed=7, dim=DIM)
    slow = writer(kit, url, tmp_path / "slow")
    fast = writer(kit, url, tmp_path / "fast")
    slow.append_segment(*work.batch(30))
    changes = work.batch(5, 5, 5)
    real_push = RemoteIndex.push

    def push_after_another_writer(self):  # another writer publishes between this one's sync and its publish
        monkeypatch.setattr(RemoteIndex, "push", real_push)
        fast.take_snapshot()
        return real_push(self)

    monkeypatch.setattr(RemoteIndex, "push", push_after_another_writer)
    with pytest.raises(ConcurrentPublishError, match=r"s3://.*/products/MANIFEST.json was replaced by another writer"):
        slow.append_segment(*changes)
    winner = bucket_manifest(url)
    assert winner["snapshot"] is not None and winner[REMOTE_KEY]["segments"] == []
    mirror = RemoteMirror(url, tmp_path / "reader", poll_seconds=0)
    mirror.pull()
    assert len(kit.read_state(mirror.local)) == 30  # the winner's state, whole
    slow.open()  # the loser syncs to the winner's state and publishes its segment on top of it
    assert [entry["name"] for entry in bucket_manifest(url)[REMOTE_KEY]["segments"]] == [
        f"{31:020d}-{work.last_seq:020d}.parquet"
    ]
    check_bucket_at_rest(url, tmp_path / "copy")
    kit.assert_state_matches(kit.read_state(tmp_path / "copy"), work.model)


def test_the_published_statistics_are_the_writers_own(kit, url, tmp_path):
    work = kit.Workload(seed=8, dim=DIM)
    store = writer(kit, url, tmp_path / "writer")
    assert remote.published_stats(url).last_seq == 0
    for batch in ((50, 0, 0), (10, 10, 10), (5, 5, 5)):
        store.append_segment(*work.batch(*batch))
        if batch[0] == 10:
            store.take_snapshot()
        local, published = read_stats(store.root, now=1e10), remote.published_stats(url, now=1e10)
        assert replace(published, files=local.files) == local
    assert remote.published_stats(url.replace("products", "nothing")) is None
