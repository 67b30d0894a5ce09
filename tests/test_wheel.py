"""Installed, quiver is one name: the wheel puts ``quiver`` (and its dist-info) into site-packages,
nothing else, and the public API imports from it away from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*command, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(map(str, command))}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # No build isolation: the lock file pins setuptools, so the build needs no download.
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT), cwd=out)
    (found,) = out.glob("quiver-*.whl")
    return found


def test_the_wheel_holds_one_top_level_name(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"quiver", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, tops
    # every module of the repository's layer folders is in it, under its quiver.* name
    for folder, package in (("resources", "quiver/resources"), ("assets", "quiver/assets"),
                            ("sensors", "quiver/sensors"), ("pipelines", "quiver/pipelines")):
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                assert f"{package}/{path.relative_to(ROOT / folder).as_posix()}" in names, path
    assert "quiver/resources/embedding/fidelity_sample.txt" in names


def test_installed_in_a_fresh_environment_it_adds_only_quiver(wheel, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    before = set(os.listdir(site))
    run(str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel), cwd=tmp_path)
    added = set(os.listdir(site)) - before
    assert {name.split("-")[0] for name in added} == {"quiver"} and len(added) == 2, sorted(added)

    # Away from the checkout, with this environment's dependencies on PYTHONPATH (they hold no quiver:
    # the checkout's editable install is a finder that only a site .pth loads): the public API comes
    # from the installed quiver, and the bare layer names are not importable.
    deps = sysconfig.get_paths()["purelib"]
    probe = (
        "import importlib.util, quiver\n"
        "from quiver import SearchError, SpecError, load_spec, search\n"
        "from quiver.resources.embedding.onnx_export import SAMPLE_FILE\n"
        f"assert quiver.__file__.startswith({str(site)!r}), quiver.__file__\n"
        "assert SAMPLE_FILE.is_file(), SAMPLE_FILE\n"
        "assert [n for n in ('resources', 'assets', 'sensors', 'pipelines') if importlib.util.find_spec(n)] == []\n"
        "print(search.__module__, SearchError.__module__, SpecError.__module__)\n"
    )
    env = {**os.environ, "PYTHONPATH": deps}
    out = run(str(python), "-c", probe, cwd=tmp_path, env=env)
    assert out.split() == ["quiver.pipelines.query", "quiver.resources.search", "quiver.resources.spec_file"]
