"""Writers publishing to a bucket (moto's S3 server on 127.0.0.1), SIGKILLed in a subprocess at
each point of the publish (``remote.mid_upload``, ``remote.before_publish``,
``remote.before_cleanup``): until the manifest's conditional PUT, readers on the bucket serve the
last published state; the next write, from the same local copy or from an empty one (a new pod),
publishes the committed state and leaves no orphan; the storage invariants then hold on the bucket."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator

import pytest

from quiver.resources.faults import REMOTE_POINTS
from quiver.resources.index.manifest import MANIFEST_NAME
from quiver.resources.index.remote import RemoteMirror
from quiver.resources.object_store import ObjectStore
from tests.crash import scenario
from tests.invariants import check_bucket_at_rest, index_state
from tests.servers import aws_env, create_bucket, moto_server

KILLED = -9
POINTS = REMOTE_POINTS


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    with moto_server() as server:
        yield server.url


@pytest.fixture
def url(s3, monkeypatch) -> str:
    for name, value in aws_env(s3).items():
        monkeypatch.setenv(name, value)  # the writer subprocesses inherit them
    bucket = f"crash-{uuid.uuid4().hex[:12]}"
    create_bucket(s3, bucket)
    return f"s3://{bucket}/quiver/{scenario.DATASET}"


def published(url: str) -> dict:
    return json.loads(ObjectStore(url).get(MANIFEST_NAME)[0])


@pytest.mark.parametrize("new_machine", [False, True], ids=["same-copy", "new-machine"])
@pytest.mark.parametrize("command", ["refresh", "snapshot"])
@pytest.mark.parametrize("point", POINTS)
def test_a_writer_killed_while_publishing_to_a_bucket(tmp_path, url, point, command, new_machine):
    work = tmp_path
    (work / scenario.REMOTE_MARKER).write_text(url)
    source = scenario.prepare(work, seed=10 * POINTS.index(point) + (command == "snapshot"), keep_previous=False)
    reader = RemoteMirror(url, tmp_path / "reader-cache", poll_seconds=0)
    reader.pull()
    served_before, manifest_before = index_state(reader.local), published(url)

    source.step()
    source.write(work)
    if command == "snapshot":
        scenario.refresh(work)  # a log to fold
        reader.pull()
        served_before, manifest_before = index_state(reader.local), published(url)
    killed = scenario.run_writer(command, work, kill_at=point)
    assert killed.returncode == KILLED, killed.stderr[-2000:]

    reader.pull()
    if point != "remote.before_cleanup":  # not published: readers serve what they served
        assert published(url) == manifest_before
        assert index_state(reader.local) == served_before
    else:  # published, its cleanup undone: readers serve the new state
        assert published(url) != manifest_before

    if new_machine:
        shutil.rmtree(scenario.index_root(work))
    rerun = scenario.run_writer("refresh", work)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    scenario.take_snapshot(work)
    check_bucket_at_rest(url, tmp_path / "bucket-copy", scenario.database_path(work), scenario.DATASET)
    scenario.assert_index_equals_source(work, source)
    reader.pull()
    assert index_state(reader.local) == index_state(tmp_path / "bucket-copy")
