"""The command line's serving flags as a subprocess: search --where / --ef-search, serve --help."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT
from tests.serving.conftest import env_for


def _cli(built, *args):
    return subprocess.run(
        [sys.executable, "-m", "quiver", *args],
        cwd=ROOT,
        env=env_for(built),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_search_ef_search(built):
    plain = _cli(built, "search", "pkgs", "text editor", "--k", "5", "--json")
    wide = _cli(built, "search", "pkgs", "text editor", "--k", "5", "--json", "--ef-search", "200")
    assert plain.returncode == 0 and wide.returncode == 0, plain.stderr + wide.stderr
    assert [h["pkg_id"] for h in json.loads(wide.stdout)] == [h["pkg_id"] for h in json.loads(plain.stdout)]


def test_bad_ef_search_is_a_usage_error(built):
    done = _cli(built, "search", "pkgs", "text", "--ef-search", "0")
    assert done.returncode == 2 and "--ef-search: must be a positive integer, got '0'" in done.stderr


def test_serve_help_defaults_to_loopback(built):
    done = _cli(built, "serve", "--help")
    assert done.returncode == 0 and "--host HOST" in done.stdout and "loopback" in done.stdout


# --- where -------------------------------------------------------------------------------------


def test_search_where(built):
    _, _, table = built
    python_ones = sum(1 for s in table.column("section").to_pylist() if s == "python")
    done = _cli(built, "search", "pkgs", "library", "--k", "4", "--json", "--where", "section = 'python'")
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert len(hits) == min(4, python_ones) and {h["section"] for h in hits} == {"python"}


def test_search_bad_where_one_line_error(built):
    done = _cli(built, "search", "pkgs", "library", "--where", "nosuch = 1")
    assert done.returncode == 2
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "nosuch" in line and "served columns" in line
