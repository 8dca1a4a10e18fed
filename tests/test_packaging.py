"""What a user's installer sees: the Python requirement against the pins, the declared dependencies, the wheel's
metadata (SPDX license, py.typed), and the Makefile's interpreter / half-made venv handling (with stand-in pythons)."""

from __future__ import annotations

import ast
import importlib.metadata as md
import os
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _floor(spec: SpecifierSet) -> Version:
    """The oldest Python X.Y that `spec` admits (X.Y.0 of the lowest >= bound)."""
    lows = [Version(s.version) for s in spec if s.operator in (">=", ">")]
    assert lows, f"requires-python {spec} has no lower bound"
    return max(lows)


def test_requires_python_is_the_oldest_python_every_pin_installs_on():
    floor = _floor(SpecifierSet(PYPROJECT["requires-python"]))
    older = Version(f"{floor.major}.{floor.minor - 1}")
    checked, refuse_older = 0, []
    for name, version in _pins().items():
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        if dist.version != version or not dist.metadata.get("Requires-Python"):
            continue
        needs = SpecifierSet(dist.metadata["Requires-Python"])
        assert needs.contains(floor), f"{name}=={version} needs Python {needs}; pyproject says {floor}"
        checked += 1
        if not needs.contains(older):
            refuse_older.append(name)
    assert checked >= 30  # the installed environment is the pinned one
    # Tight as well as true: a Python one minor older would fail inside pip.
    assert refuse_older, f"no pin needs Python {floor}: requires-python could be lower"


def _imported_top_level_modules() -> set[str]:
    names = set()
    for path in (ROOT / "istpan").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"istpan"}


def test_every_imported_distribution_is_declared():
    declared = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["dependencies"]}
    for extra in PYPROJECT["optional-dependencies"].values():
        declared |= {canonicalize_name(Requirement(r).name) for r in extra if not r.startswith("istpan")}
    owners = md.packages_distributions()
    undeclared = {}
    for module in _imported_top_level_modules():
        dists = {canonicalize_name(d) for d in owners.get(module, [])}
        assert dists, f"istpan imports {module!r}, which no installed distribution provides"
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    core = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["dependencies"]}
    assert {"huggingface-hub", "safetensors"} <= core  # from_pretrained / HF folders work without extras


def test_wheel_metadata_spdx_license_and_py_typed(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "istpan", src / "istpan", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("istpan-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        files = set(zf.namelist())
        meta = next(zf.read(n).decode() for n in files if n.endswith(".dist-info/METADATA"))
    headers = [line.split(": ", 1) for line in meta.split("\n\n")[0].splitlines() if ": " in line]
    assert ["License-Expression", "MIT"] in headers
    assert not [h for h in headers if h[0] == "License" or h[1].startswith("License ::")]  # no deprecated forms
    assert "istpan/py.typed" in files and "istpan/configs/ucf101.yaml" in files
    requires = {canonicalize_name(Requirement(v).name) for k, v in headers if k == "Requires-Dist"}
    assert {"huggingface-hub", "safetensors", "torch"} <= requires


def test_every_hub_command_istpan_prints_exists():
    # The pinned huggingface_hub installs `hf` only; its older name must appear nowhere (messages, docs, examples).
    old = "huggingface" + "-cli"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    hits = [name for name in tracked.decode().split("\0")
            if name and (ROOT / name).is_file() and old in (ROOT / name).read_text(errors="replace")]
    assert not hits, f"{old} in {hits}"
    assert (Path(sys.executable).parent / "hf").exists()  # the command the messages name is installed


# ---------------------------------------------------------------- the Makefile, with stand-in interpreters

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _make(target: str, python: Path | str, venv: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(ROOT), f"PYTHON={python}", f"VENV={venv}", target],
                          capture_output=True, text=True, env={**os.environ, "MAKEFLAGS": ""})


@needs_make
def test_make_on_an_old_python_stops_with_one_line_before_creating_the_venv(tmp_path):
    old = _script(tmp_path / "python3", 'case "$1" in -c) echo 3.10 ;; -V) echo "Python 3.10.12" ;; *) exit 1 ;; esac')
    venv = tmp_path / "venv"
    result = _make("install", old, venv)
    assert result.returncode != 0 and not venv.exists()
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "Python >= 3.11" in lines[0] and "Python 3.10" in lines[0] and "install" in lines[0]
    missing = _make("install", tmp_path / "no-such-python", venv)
    assert missing.returncode != 0 and "not found" in missing.stderr and not venv.exists()


@needs_make
def test_make_removes_a_venv_that_venv_failed_to_finish(tmp_path):
    # Debian's python3 without python3-venv: `-m venv` leaves bin/python (no pip) and fails.
    debian = _script(tmp_path / "python3", f'if [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$3/bin"; '
                     f'ln -s {sys.executable} "$3/bin/python"; echo "ensurepip is not available" >&2; exit 1; fi\n'
                     f'exec {sys.executable} "$@"\n')
    venv = tmp_path / "venv"
    result = _make("install", debian, venv)
    assert result.returncode != 0 and "python3-venv" in result.stdout + result.stderr
    assert not venv.exists()  # the next make starts afresh instead of trusting bin/python


@needs_make
def test_make_remakes_a_half_made_venv_and_keeps_a_good_one(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    _script(venv / "bin" / "python", "exit 1\n")  # left behind, no pip
    made = tmp_path / "made"
    # A python that makes venvs whose interpreter is this test's (3.11+, with pip).
    good = _script(tmp_path / "python3", f'if [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$3/bin"; '
                   f'printf "#!/bin/sh\\nexec {sys.executable} \\"\\$@\\"\\n" > "$3/bin/python"; '
                   f'chmod +x "$3/bin/python"; touch {made}; exit 0; fi\nexec {sys.executable} "$@"\n')
    result = _make(f"{venv}/.venv-ok", good, venv)
    assert result.returncode == 0, result.stderr
    assert made.exists() and sys.executable in (venv / "bin" / "python").read_text()
    made.unlink()
    (venv / ".venv-ok").unlink()
    assert _make(f"{venv}/.venv-ok", good, venv).returncode == 0
    assert not made.exists() and (venv / ".venv-ok").exists()  # a complete venv is kept, not remade
