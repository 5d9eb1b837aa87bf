"""Regenerate the "Module list" section of docs/architecture.md from the module docstrings.

Run after adding or removing a module (``.venv/bin/python scripts/module_list.py``);
``tests/test_imports.py`` fails while the list and the tree differ.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "## Module list"
lines = [
    MARK,
    "",
    "Every module file of `sswe_node/` and `training/` (package `__init__.py` files and the",
    "Alembic revisions in `sswe_node/node/migrations/versions/` aside), with its one job, from its",
    "docstring. `tests/test_imports.py` checks that this list matches the tree, that no import",
    "cycle exists between these modules, and that `sswe_node` never imports `training`.",
    "",
]
groups = {}
for pkg in ("sswe_node", "training"):
    for p in sorted((ROOT / pkg).rglob("*.py")):
        rel = p.relative_to(ROOT).as_posix()
        if p.name == "__init__.py" or "migrations/versions" in rel:
            continue
        doc = ast.get_docstring(ast.parse(p.read_text())) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        groups.setdefault(str(p.parent.relative_to(ROOT).as_posix()), []).append((rel, first))
for folder, items in groups.items():
    lines.append(f"`{folder}/`")
    lines.append("")
    for rel, first in items:
        lines.append(f"- `{rel}`: {first}")
    lines.append("")
doc = (ROOT / "docs/architecture.md").read_text()
if MARK in doc:
    before, rest = doc.split(MARK, 1)
    after = rest[rest.find("\n## ", 1) :] if "\n## " in rest else ""
    doc = before + "\n".join(lines).rstrip() + "\n" + after
else:
    doc = doc.rstrip() + "\n\n" + "\n".join(lines).rstrip() + "\n"
(ROOT / "docs/architecture.md").write_text(doc)
print("ok", sum(len(v) for v in groups.values()))
