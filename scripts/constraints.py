"""Write constraints.txt: the versions installed in .venv of everything pyproject.toml needs.

Run with the project's environment (``make constraints``, or
``.venv/bin/python scripts/constraints.py``) after a dependency changed. It walks the
requirements of pyproject.toml (base and the ``training``, ``postgres`` and ``test`` extras)
through the installed distributions' own requirements and pins each one found at its
installed version, like ``pip freeze`` filtered to what the project needs. ``scripts/setup.sh``
installs with ``-c constraints.txt``, so CI gets the versions the suite last passed with.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("training", "postgres", "test")
#: Distributions that install the same import package: the one pyproject names is pinned at
#: the version of whichever is installed (a CPU-only .venv may hold ``tensorflow-cpu``).
SAME_PACKAGE = {"tensorflow": ("tensorflow", "tensorflow-cpu")}
HEADER = """\
# Versions the test suite passes with, from the project's .venv (scripts/constraints.py).
# scripts/setup.sh installs with `pip install -c constraints.txt -e ".[training,postgres,test]"`.
# Regenerate after changing dependencies in pyproject.toml: `make constraints`.
"""


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """Return the requirements of the base install and of ``EXTRAS``."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    found = [Requirement(r) for r in project["dependencies"]]
    for extra in EXTRAS:
        found += [Requirement(r) for r in project["optional-dependencies"].get(extra, [])]
    return found


def _installed(name: str) -> metadata.Distribution | None:
    for candidate in SAME_PACKAGE.get(name, (name,)):
        try:
            return metadata.distribution(candidate)
        except metadata.PackageNotFoundError:
            continue
    return None


def pins(requirements: list[Requirement]) -> dict[str, str]:
    """Return ``{canonical name: installed version}`` of the requirements and their closure.

    Raises
    ------
    SystemExit
        When a requirement of pyproject.toml itself is not installed.
    """
    environment = default_environment()
    pinned: dict[str, str] = {}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo = [(req, "") for req in requirements]
    top = {canonicalize_name(r.name) for r in requirements}
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**environment, "extra": extra}):
            continue
        name = canonicalize_name(req.name)
        dist = _installed(name)
        if dist is None:
            if name in top:
                raise SystemExit(
                    f"{req.name} (pyproject.toml) is not installed in this environment"
                )
            continue  # an optional dependency of a dependency, not installed here
        extras = tuple(sorted(req.extras))
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        pinned[name] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            for wanted in ["", *extras]:
                todo.append((sub, wanted))
    return dict(sorted(pinned.items()))


def render(pinned: dict[str, str]) -> str:
    """Return the text of constraints.txt."""
    return HEADER + "".join(f"{name}=={version}\n" for name, version in pinned.items())


def main(argv: list[str] | None = None) -> int:
    """Write (or ``--check``) constraints.txt."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "constraints.txt")
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render(pins(project_requirements()))
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run `make constraints`", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.splitlines()) - HEADER.count(chr(10))} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
