"""Build hook: the wheel carries the default configuration and the shipped models as package data.

``config/node.toml`` and ``models/<name>/`` stay where they are in the checkout (the README,
tests and training write there); at build time they are copied into the wheel under
``sswe_node/_data/``, where :mod:`sswe_node.shipped` finds them once installed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: Files of each model folder's evaluation that the wheel carries (not the figures).
EVALUATION_FILES = ("evaluation/report.md", "evaluation/report.json")


def shipped_files() -> list[tuple[Path, str]]:
    """Return ``(source, path below sswe_node/_data)`` of every file the wheel ships."""
    files = [(ROOT / "config" / "node.toml", "config/node.toml")]
    models = ROOT / "models"
    if (models / "README.md").is_file():
        files.append((models / "README.md", "models/README.md"))
    for manifest in sorted(models.glob("*/model.toml")):
        folder = manifest.parent
        # Every file of the package itself (manifest, weights, sidecars such as trust.npz).
        names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name[0] != ".")
        for name in [*names, *EVALUATION_FILES]:
            if (folder / name).is_file():
                files.append((folder / name, f"models/{folder.name}/{name}"))
    return files


class BuildPyWithData(build_py):
    """``build_py`` that also copies the shipped configuration and models into the build."""

    def run(self) -> None:
        """Build the Python files, then copy the shipped files next to them."""
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads config/ and models/ of the checkout itself
        target = Path(self.build_lib) / "sswe_node" / "_data"
        for source, relative in shipped_files():
            dest = target / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)


setup(cmdclass={"build_py": BuildPyWithData})
