"""Where the ONNX export is kept: one user cache for every QUIVER_HOME, unless told otherwise."""

from __future__ import annotations

import os

from quiver.resources.embedding import ENV_CACHE, default_cache_dir


def test_every_home_shares_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_CACHE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("QUIVER_HOME", str(tmp_path / "home-a"))
    first = default_cache_dir()
    monkeypatch.setenv("QUIVER_HOME", str(tmp_path / "home-b"))
    assert default_cache_dir() == first == tmp_path / "cache" / "quiver" / "models"
    assert first.is_dir()


def test_the_variable_moves_it(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "exports"))
    assert default_cache_dir() == tmp_path / "exports"


def test_an_unwritable_user_cache_falls_back_to_the_home(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_CACHE, raising=False)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setenv("QUIVER_HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / "models"
    assert not os.path.isdir(blocked)
