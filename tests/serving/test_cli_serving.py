"""The command line's serving flags as a subprocess: search --where / --ef-search / --mode /
--keywords, serve --help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from quiver.resources.search import HYBRID_COLUMNS
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


# --- mode and keywords --------------------------------------------------------------------------

ASEBA = 1188  # package "aseba": its name is a word only the full-text pass ranks first


def test_search_defaults_to_hybrid(built):
    done = _cli(built, "search", "pkgs", "aseba", "--k", "3")
    assert done.returncode == 0, done.stderr
    header, _, first, *_ = done.stdout.splitlines()
    assert header.split() == ["pkg_id", *HYBRID_COLUMNS, "package", "section", "short_description"]
    assert first.split()[0] == str(ASEBA)


def test_mode_text_finds_a_package_by_name(built):
    done = _cli(built, "search", "pkgs", "aseba", "--mode", "text", "--json")
    assert done.returncode == 0, done.stderr
    hits = json.loads(done.stdout)
    assert list(hits[0]) == ["pkg_id", "score", "package", "section", "short_description"]  # score: BM25
    assert hits[0]["pkg_id"] == ASEBA and hits[0]["package"] == "aseba"
    vector = json.loads(_cli(built, "search", "pkgs", "aseba", "--mode", "vector", "--json").stdout)
    assert list(vector[0])[:3] == ["pkg_id", "score", "distance"] and vector[0]["pkg_id"] != ASEBA


def test_keywords_are_what_the_text_pass_searches(built):
    done = _cli(built, "search", "pkgs", "robot control framework", "--keywords", "aseba", "--k", "5", "--json")
    assert done.returncode == 0, done.stderr
    hits = {h["pkg_id"]: h for h in json.loads(done.stdout)}
    assert hits[ASEBA]["text_rank"] == 1
    assert all(h["text_rank"] is None for pk, h in hits.items() if pk != ASEBA)
    text = json.loads(_cli(built, "search", "pkgs", "robot", "--keywords", "aseba", "--mode", "text", "--json").stdout)
    assert [h["pkg_id"] for h in text] == [ASEBA]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "fuzzy"], "argument --mode: invalid choice: 'fuzzy' (choose from "),  # then the modes
        (["--mode", "vector", "--keywords", "aseba"], "--keywords are what the text pass searches"),
    ],
)
def test_bad_mode_is_a_usage_error(built, args, message):
    done = _cli(built, "search", "pkgs", "text", *args)
    assert done.returncode == 2 and message in done.stderr and done.stdout == ""
    assert "hybrid" in done.stderr and "text" in done.stderr  # the modes to use
