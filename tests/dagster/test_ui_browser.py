"""The Dagster UI in a real browser: the real ``dagster-webserver`` on a materialized project, Chromium on it.

A 40-row dataset (with a ``refresh_cron``, so it has a schedule) is materialized in this process,
its asset checks and the on-demand evaluation chart included, into a ``DagsterInstance`` at a
temporary ``DAGSTER_HOME`` (so the UI has a run, materializations and check results to show); then
``dagster-webserver`` serves the project's ``workspace.yaml`` on 127.0.0.1, and Debian's Chromium,
driven by Playwright, reads the pages a user reads: the catalog, the asset lineage graph, each
check's result, the snapshot's metadata, the evaluation's chart, the runs, the jobs, the sensors and
the schedule, and no page may log an error to the browser's console. ``QUIVER_UI_SCREENSHOT=1``
writes the graph to ``docs/ui_asset_graph.png`` (the README's picture) and the index's checks to
``docs/ui_asset_checks.png``; otherwise the screenshots land in ``tmp_path``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, materialize

from quiver.assets import dataset_assets, dataset_checks, evaluation_asset
from quiver.pipelines.definitions import build_resources
from quiver.resources.spec import load_spec
from tests.conftest import dataset_entry, write_spec
from tests.dagster.helpers import metadata_of

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed in this environment: `make install` installs it"
)

ROOT = Path(__file__).resolve().parents[2]
WEBSERVER = Path(sys.executable).with_name("dagster-webserver")
CHROMIUM = Path("/usr/bin/chromium")
# Playwright adds --headless and --user-data-dir (a fresh directory per test); without the rest,
# Chromium waits on the network that this closed machine does not have.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Dagster's "join the community" dialog covers the page on 127.0.0.1 until dismissed in the browser.
DISMISS_NUX = "window.localStorage.setItem('communityNux', JSON.stringify('1'))"
DS = "pkgs"
CRON = "0 * * * *"  # refresh_cron: the dataset gets the schedule <ds>_refresh_schedule ("Every hour" in the UI)
# The checks of the run, by the asset they check (assets/checks.py); each must pass on 40 healthy rows.
CHECKS = {"embeddings": ("embeddings_valid",), "index": ("parity", "recall_at_10"), "snapshot": ("snapshot_integrity",)}
CHART_ALT = "recall@10 and latency vs ef_search"  # the alt text of the evaluation's chart (assets/evaluation.py)
SERVER_START_S = 90
UI_MS = 30_000  # each page check waits up to this long (Playwright's auto-waiting, no sleeps)

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (Debian's chromium package): `make install` installs it"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(process: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"dagster-webserver exited ({process.returncode})\n{log_path.read_text(errors='replace')[-6000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"no /server_info within {SERVER_START_S}s\n{log_path.read_text(errors='replace')[-6000:]}")


def graph_node(page, stage: str):
    """A node of the lineage graph by its name: at this viewport's zoom the graph draws minimal nodes (the
    name, and the status as the box's colour), boxes of class AssetNode_minimalAssetNodeBox...; group
    headers are not nodes."""
    boxes = page.locator('foreignObject [class*="AssetNode_minimalAssetNodeBox"]')
    return boxes.filter(has_text=re.compile(rf"^{stage}$"))


def png_width(path: Path) -> int:
    """The width in a PNG's IHDR chunk (bytes 16-19, big-endian)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">I", header[16:20])[0]


def screenshot_path(name: str, tmp_path: Path) -> Path:
    return ROOT / "docs" / name if os.environ.get("QUIVER_UI_SCREENSHOT") == "1" else tmp_path / name


@pytest.fixture()
def project(tmp_path, sample_table, monkeypatch):
    """A 40-row dataset materialized into a real instance, with its asset checks and the on-demand evaluation
    (about 2 s more at 40 rows); returns the run id, the metadata of the snapshot and of the evaluation, the
    checks' descriptions by name, and the env."""
    source = tmp_path / "src" / "packages.parquet"
    source.parent.mkdir()
    pq.write_table(sample_table.slice(0, 40), source)
    spec_path = write_spec(tmp_path / "datasets.yaml", [dataset_entry(DS, source, refresh_cron=CRON)])
    home, dagster_home = tmp_path / "home", tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(ROOT / "pipelines" / "dagster.yaml", dagster_home / "dagster.yaml")  # the shipped instance config
    env = {"QUIVER_DATASETS": str(spec_path), "QUIVER_HOME": str(home), "DAGSTER_HOME": str(dagster_home)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    spec = load_spec(spec_path)
    dataset = spec.get(DS)
    # Materialized before the webserver starts, so that this process alone creates the instance's storage.
    # One run: the chain, every check of it, and the evaluation chart (the neighbours asset stays unbuilt).
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        result = materialize(
            [*dataset_assets(dataset), *dataset_checks(dataset), evaluation_asset(dataset)],
            resources=build_resources(spec, home),
            instance=instance,
        )
    assert result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert {(e.asset_key.path[-1], name) for name, e in evaluations.items()} == {
        (stage, name) for stage, names in CHECKS.items() for name in names
    }
    assert all(e.passed for e in evaluations.values()), {n: e.description for n, e in evaluations.items()}
    return (
        result.run_id,
        metadata_of(result, [DS, "snapshot"]),
        metadata_of(result, [DS, "evaluation"]),
        {name: e.description for name, e in evaluations.items()},
        {**os.environ, **env},
    )


@pytest.fixture()
def webserver(project, tmp_path):
    """``dagster-webserver`` on the project's workspace.yaml; stopped by its process group."""
    *_, env = project
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "webserver.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(WEBSERVER), "-h", "127.0.0.1", "-p", str(port), "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the code server goes with it
        )
    try:
        wait_for_server(process, url, log_path)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture()
def page(tmp_path):
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            context.add_init_script(DISMISS_NUX)
            context.set_default_timeout(UI_MS)
            context.set_default_navigation_timeout(UI_MS)
            yield context.new_page()
        finally:
            context.close()


def test_ui_shows_assets_checks_metadata_plots_runs_jobs_and_automation(project, webserver, page, tmp_path):
    expect = sync_api.expect
    run_id, snapshot_meta, evaluation_meta, check_descriptions, _ = project
    # Every error the pages log to the console, and every uncaught exception, over the whole test.
    errors: list[str] = []

    def on_console(message) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text} at {message.location}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))

    # The catalog lists the dataset's assets.
    page.goto(f"{webserver}/assets")
    for stage in ("rows", "embeddings", "index", "snapshot", "evaluation"):
        expect(page.locator(f'a[href="/assets/{DS}/{stage}"]')).to_be_visible(timeout=UI_MS)

    # The lineage graph around the index (3 steps: source to evaluation) holds every asset of the dataset.
    page.goto(f"{webserver}/assets/{DS}/index?view=lineage&lineageScope=neighbors&lineageDepth=3")
    for stage in ("source", "rows", "embeddings", "index", "snapshot", "evaluation", "neighbours"):
        expect(graph_node(page, stage)).to_be_visible(timeout=UI_MS)
    # materialized: green (the on-demand neighbours, never built here, stays grey)
    for stage in ("rows", "embeddings", "index", "snapshot", "evaluation"):
        expect(graph_node(page, stage)).to_have_attribute(
            "style", re.compile(r"--minimal-bg: var\(--color-background-green\)"), timeout=UI_MS
        )
    expect(graph_node(page, "neighbours")).not_to_have_attribute(
        "style", re.compile(r"--color-background-green"), timeout=UI_MS
    )
    screenshot = screenshot_path("ui_asset_graph.png", tmp_path)
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000

    # Each asset's Checks tab lists its checks as succeeded, and each check's page shows the result the run
    # recorded (its description) as passed.
    for stage, names in CHECKS.items():
        page.goto(f"{webserver}/assets/{DS}/{stage}?view=checks")
        expect(page.get_by_text(f"Checks ({len(names)})", exact=True)).to_be_visible(timeout=UI_MS)
        for name in names:
            # the list's item: the check's name (a truncating box titled with it) and its status under it
            expect(page.get_by_title(name, exact=True).locator("xpath=..")).to_contain_text("Succeeded", timeout=UI_MS)
        for name in names:
            page.goto(f"{webserver}/assets/{DS}/{stage}?view=checks&checkDetail={name}")
            expect(page.get_by_text(check_descriptions[name], exact=True)).to_be_visible(timeout=UI_MS)
            result = page.get_by_text("Evaluation result", exact=True).locator("xpath=..")
            expect(result).to_contain_text("Passed", timeout=UI_MS)
        if stage == "index":  # recall_at_10, the last one opened: its metadata holds the measured recall
            expect(page.locator("tr").filter(has=page.get_by_text("recall_at_10", exact=True))).to_be_visible(
                timeout=UI_MS
            )
            screenshot = screenshot_path("ui_asset_checks.png", tmp_path)
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 10_000

    # The snapshot's page shows its latest materialization's metadata, values as materialized.
    page.goto(f"{webserver}/assets/{DS}/snapshot")
    expect(page.get_by_text("Latest materialization")).to_be_visible(timeout=UI_MS)
    for name in ("snapshot_seq", "text_index_bytes", "index_checksum"):
        row = page.locator("tr").filter(has=page.get_by_text(name, exact=True))
        expect(row).to_contain_text(str(snapshot_meta[name]), timeout=UI_MS)
    assert snapshot_meta["vectors"] == 40

    # The evaluation's page: its metadata, and its chart (markdown holding the PNG as a data: URI, which the
    # UI shows in a dialog) drawn by the browser at the PNG's own width.
    page.goto(f"{webserver}/assets/{DS}/evaluation")
    expect(page.get_by_text("Latest materialization")).to_be_visible(timeout=UI_MS)
    for name in ("chart_path", "vectors"):
        row = page.locator("tr").filter(has=page.get_by_text(name, exact=True))
        expect(row).to_contain_text(str(evaluation_meta[name]), timeout=UI_MS)
    page.locator("tr").filter(has=page.get_by_text("chart", exact=True)).get_by_text("[Show Markdown]").click()
    chart = page.get_by_role("dialog").get_by_role("img", name=CHART_ALT)
    expect(chart).to_be_visible(timeout=UI_MS)
    expect(chart).to_have_attribute("src", re.compile(r"^data:image/png;base64,"), timeout=UI_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=chart.element_handle(), timeout=UI_MS)
    assert chart.evaluate("img => img.naturalWidth") == png_width(Path(evaluation_meta["chart_path"]))
    page.get_by_role("dialog").get_by_role("button", name="Close").click()
    expect(page.get_by_role("dialog")).to_have_count(0, timeout=UI_MS)

    # The runs page lists the materialization run as a success.
    page.goto(f"{webserver}/runs")
    # (rows are divs: the run's row is the innermost one holding both its id's link and its job's link)
    run_link = page.get_by_role("link", name=run_id[:8])
    expect(run_link).to_be_visible(timeout=UI_MS)
    row = (
        page.locator("div")
        .filter(has=run_link)
        .filter(has=page.get_by_role("link", name="__ephemeral_asset_job__"))
        .last
    )
    expect(row).to_contain_text("Success", timeout=UI_MS)

    # The jobs, and the automation of the dataset: its two sensors and its schedule (links to their pages in
    # the code location); the schedule's row says its cron in words.
    page.goto(f"{webserver}/jobs")
    for job in (f"{DS}_refresh", f"{DS}_snapshot"):
        expect(page.locator(f'a[href$="/jobs/{job}"]')).to_be_visible(timeout=UI_MS)
    page.goto(f"{webserver}/automation")
    for sensor in (f"{DS}_source_sensor", f"{DS}_snapshot_sensor"):
        expect(page.locator(f'a[href$="/sensors/{sensor}"]')).to_be_visible(timeout=UI_MS)
    schedule = page.locator(f'a[href$="/schedules/{DS}_refresh_schedule"]')
    expect(schedule).to_be_visible(timeout=UI_MS)
    # (rows are divs: the schedule's row is the innermost one holding its link and its cron, in words)
    expect(page.locator("div").filter(has=schedule).filter(has_text="Every hour").last).to_be_visible(timeout=UI_MS)

    assert errors == [], "\n".join(errors)
