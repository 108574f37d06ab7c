"""The wheel holds the whole tree: ``pyproject.toml`` lists its packages by hand (the repository's
``engine/``, ``api/``, ``config/`` and ``benchmarks/`` install under ``ringline``), and the tests run
on an editable install, which would import a package the list forgot. A plain ``pip install .``
(the README's first command) would not."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
NOT_SHIPPED = {"benchmarks/audio/make_clips.sh"}
"""Files in the tree a user's install does without (a maintainer's script that remakes the clips)."""


def _tree() -> dict[str, Path]:
    """Every package directory under the mapped roots, by its installed name."""
    packages = {}
    for name, root in SETUPTOOLS["package-dir"].items():
        for init in (REPO / root).rglob("__init__.py"):
            if "node_modules" in init.parts:
                continue
            relative = init.parent.relative_to(REPO / root).parts
            packages[".".join((name, *relative))] = init.parent
    return packages


def test_every_package_directory_is_listed_and_every_listed_package_exists() -> None:
    assert sorted(SETUPTOOLS["packages"]) == sorted(_tree())


def test_every_file_that_is_not_python_is_package_data() -> None:
    """Files beside a package's modules and in its data folders (``playground/``, ``audio/``)."""
    patterns = SETUPTOOLS["package-data"]
    tree = _tree()
    owner = {directory: name for name, directory in tree.items()}
    missing = []
    for name, directory in tree.items():
        for path in directory.rglob("*"):
            nearest = next(parent for parent in path.parents if parent in owner)
            if path.is_dir() or path.suffix in (".py", ".pyc") or owner[nearest] != name:
                continue
            relative = path.relative_to(directory).as_posix()
            if not any(fnmatch.fnmatch(relative, pattern) for pattern in patterns.get(name, [])):
                missing.append(path.relative_to(REPO).as_posix())
    assert sorted(missing) == sorted(NOT_SHIPPED)
