"""The README's "Build a training dataset" then "Train and evaluate a model" blocks, as written."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _block(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}", 1)[1]
    block = re.search(r"```sh\n(.*?)```", body, re.S)
    assert block, f"the README section {section!r} has no sh block"
    return [line for line in block.group(1).replace("\\\n", " ").splitlines() if line.strip()]


def test_readme_train_and_evaluate(tmp_path: Path) -> None:
    (tmp_path / "training").symlink_to(ROOT / "training")  # the README runs from the repo root
    for line in _block("Build a training dataset") + _block("Train and evaluate a model"):
        argv = shlex.split(line)
        argv[0] = str(ROOT / argv[0])
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (line, done.stderr[-2000:])
    manifest = (tmp_path / "var/models/my-model/model.toml").read_text()
    assert "sha256" in manifest and "SIMULATED" in manifest.upper()
    report = (tmp_path / "var/eval/report.md").read_text()
    assert "per-patient" in report and "not for diagnosis" in report
