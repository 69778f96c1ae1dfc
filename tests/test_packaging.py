"""The built wheel is self-contained: installed outside the repository it runs and finds its data files."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "kgexplain").rglob("__init__.py")}
    found |= {"kgexplain.cli", "kgexplain.schema"}
    assert found <= listed, found - listed
    assert config["package-dir"]["kgexplain.cli"] == "cli"
    assert config["package-dir"]["kgexplain.schema"] == "schema"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in files:
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        check=True,
        capture_output=True,
    )
    return next(dist.glob("kgexplain-*.whl"))


def test_wheel_holds_only_the_kgexplain_namespace(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"kgexplain"}
    assert "kgexplain/cli/main.py" in names and "kgexplain/schema/__init__.py" in names
    assert "kgexplain/zoo/weights/toynet.pt" in names


def test_wheel_runs_outside_the_repository(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True
    )
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Dependencies (torch, click, ...) come from this environment, *after* the wheel's own files.
    outer = [p for p in site.getsitepackages() if "site-packages" in p]
    Path(purelib, "zz_outer_env.pth").write_text("\n".join(outer) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    code = (
        "import kgexplain, importlib.resources as r, sys;"
        "from kgexplain.cli.main import cli;"
        "assert 'site-packages' in kgexplain.__file__ and 'zz' not in kgexplain.__file__, kgexplain.__file__;"
        "print(kgexplain.__file__);"
        "print(sorted(p.name for p in r.files('kgexplain.schema').iterdir()));"
        "print((r.files('kgexplain.zoo') / 'weights' / 'toynet.pt').is_file());"
        "sys.argv = ['kgexplain', '--help']; cli()"
    )
    out = subprocess.run([str(py), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith(purelib)
    assert "__init__.py" in lines[1]
    assert lines[2] == "True"
    assert "Turn what a trained CNN has learned" in out.stdout
    script = subprocess.run(
        [str(venv / "bin" / "kgexplain"), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert script.returncode == 0 and "kgexplain build" in script.stdout, script.stderr
