"""Import hygiene and packaging, each checked in a fresh interpreter."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from .conftest import FRAMEWORK_MODULES, import_backend

ROOT = Path(__file__).resolve().parents[1]
FRAMEWORKS = FRAMEWORK_MODULES


def _python(code: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_import_focalx_imports_no_framework():
    code = (
        "import sys, numpy as np, focalx\n"
        "focalx.sigmoid_focal_loss(np.zeros(3), np.ones(3))\n"
        "focalx.softmax_focal_loss(np.zeros((2, 3)), np.array([0, 2]))\n"
        "import focalx.backends\n"
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_focalx_torch_is_a_real_module_and_the_backend_object():
    import_backend("torch")
    out = _python("import focalx.torch as a, focalx.backends.torch as b; "
                  "assert a.sigmoid_focal_loss is b.sigmoid_focal_loss; print(a.__name__)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "focalx.torch"


def test_backends_cannot_be_imported_as_a_second_copy():
    out = _python("import backends.torch")
    assert out.returncode != 0
    assert "relative import beyond top-level package" in out.stderr


def test_wheel_ships_backends_inside_the_package(tmp_path):
    src = tmp_path / "src"  # build from a copy: pip builds in-tree and would leave build/ behind
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(src)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = tmp_path.glob("focalx-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"focalx/__init__.py", "focalx/_spec.py", "focalx/backends/__init__.py",
            "focalx/backends/torch/__init__.py", "focalx/torch.py", "focalx/py.typed",
            "focalx/conformance/__init__.py", "focalx/conformance/golden.json",
            "focalx/conformance/oracle.py", "focalx/_cli.py"} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "focalx = focalx._cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    assert not any(n.startswith(("backends/", "tests/", "conformance/")) for n in names)
    # every source file of the package and its subpackages (a subpackage missing from
    # pyproject's list would be left out of the wheel while an editable install works)
    for folder, prefix in (("focalx", "focalx/"), ("backends", "focalx/backends/"),
                           ("conformance", "focalx/conformance/")):
        for path in (ROOT / folder).rglob("*.py"):
            if "__pycache__" not in path.parts:
                rel = path.relative_to(ROOT / folder).as_posix()
                assert prefix + rel in names, f"the wheel lacks {prefix + rel}"
    # The unpacked wheel works on its own, from a directory away from the checkout.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = dict(os.environ, PYTHONPATH=str(site))
    run = subprocess.run([sys.executable, "-c",
                          "import focalx, focalx.backends, focalx.conformance as c; "
                          "assert len(c.runner.load_golden()['cases']) > 100; "
                          "print(focalx.backends.__file__)"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith(str(site))


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in readme.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2, commands
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in ci.splitlines()


def test_ci_installs_and_requires_every_backend(monkeypatch):
    """CI installs the extra `all` and requires `all`; `all` is every registered backend's extra
    (so that a backend added to the registry is installed and required by CI)."""
    import tomllib

    from .conftest import KNOWN_BACKENDS, _required
    ci = (ROOT / ".ci" / "run").read_text()
    (line,) = [line for line in ci.splitlines() if "FOCALX_REQUIRE_BACKENDS=" in line]
    assert line.split("FOCALX_REQUIRE_BACKENDS=")[1].split()[0] == "all"
    assert "all" in line.split('-e ".[')[1].split("]")[0].split(",")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert all(name in extras for name in KNOWN_BACKENDS), sorted(extras)
    (ref,) = extras["all"]
    assert sorted(ref.split("[")[1].rstrip("]").split(",")) == sorted(KNOWN_BACKENDS)
    monkeypatch.setenv("FOCALX_REQUIRE_BACKENDS", "all")
    assert _required() == list(KNOWN_BACKENDS)