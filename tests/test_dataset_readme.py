"""The README's "Build a training dataset" commands, run as written (in a scratch folder)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Build a training dataset", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the README section has no sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_dataset_commands(tmp_path: Path) -> None:
    outputs = []
    for line in _readme_commands():
        argv = shlex.split(line)
        argv[0] = str(ROOT / argv[0])
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout)
    assert "generated a pseudonymisation key" in outputs[1]
    info = outputs[2]
    assert "12 labelled, 24 unlabelled; 6 patients" in info, info
    assert "by organ: prostate: 36" in info and "not for diagnosis" in info
