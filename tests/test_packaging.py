"""The installed roomfeed is the tree: every top-level package is shipped (pyproject.toml's
`include`) or named here as not shipped, every file it reads is package data, and the installed
interpreter finds every shipped package from outside the repository. The editable install maps packages to folders when it is made, so a package
it does not know still imports in the repository root (where pytest runs) and fails in the `roomfeed`
command and in every process started elsewhere (`No module named 'worlds'`)."""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from roomfeed.settings import REPO_ROOT

NOT_SHIPPED = {"tests"}  # bench/ and examples/ are folders of scripts, not packages
FIND_SPECS = "import importlib.util, sys; print(' '.join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is None))"


def _packages() -> list[str]:
    return sorted(path.parent.name for path in REPO_ROOT.glob("*/__init__.py"))


def _shipped() -> list[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    include: list[str] = project["tool"]["setuptools"]["packages"]["find"]["include"]
    return [name for name in _packages() if any(fnmatch.fnmatchcase(name, pattern) for pattern in include)]


def test_every_package_is_shipped_or_named_as_not_shipped() -> None:
    assert [name for name in _packages() if name not in NOT_SHIPPED and name not in _shipped()] == []


def test_every_file_a_shipped_package_reads_is_in_the_wheel() -> None:
    """The image installs a wheel, not the tree: a `.lua` or `.sql` file missing from package-data
    (it once was: feed/lua/claim_page.lua, alliance/lua/*.lua) fails at import in production only."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns: list[str] = project["tool"]["setuptools"]["package-data"]["*"]
    left_out = [
        str(path.relative_to(REPO_ROOT))
        for name in _shipped()
        for path in sorted((REPO_ROOT / name).rglob("*"))
        if path.is_file()
        and path.suffix not in (".py", ".pyc")
        and "__pycache__" not in path.parts
        # every folder of a shipped package is a package (namespaces), so a pattern names its own files
        and not any(fnmatch.fnmatchcase(path.name, pattern) for pattern in patterns if "/" not in pattern)
    ]
    assert left_out == []


def test_the_installed_interpreter_finds_every_shipped_package(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run(
        [sys.executable, "-c", FIND_SPECS, *_shipped()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    missing = found.stdout.split()
    assert missing == [], (
        f"not installed: {missing}; run `scripts/bootstrap` (it reinstalls when packages change)"
    )
