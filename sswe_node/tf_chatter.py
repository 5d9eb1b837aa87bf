"""Silence TensorFlow's start-up chatter (``cpu_feature_guard``, oneDNN, absl lines).

TensorFlow prints a few INFO lines from C++ while it is imported. ``TF_CPP_MIN_LOG_LEVEL``
hides those of its own logging (``cpu_feature_guard``), but the oneDNN notice and absl's
"All log messages before absl::InitializeLog()" line are written by absl before any setting
applies (TensorFlow 2.16 and later). So the first ``import tensorflow`` of a process runs with
file descriptor 2 captured; afterwards every captured line except the known start-up chatter
is written out, in order. Nothing is dropped but those lines; nothing is hidden at DEBUG.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Any

#: Lines TensorFlow writes while it is imported that say nothing to a user of sswe-node.
CHATTER = re.compile(
    r"cpu_feature_guard|oneDNN custom operations are on|absl::InitializeLog\(\)|"
    r"To enable the following instructions:|rebuild TensorFlow with the appropriate compiler|"
    r"Unable to register cu(?:DNN|FFT|BLAS) factory|Could not find cuda drivers|"
    r"TF-TRT Warning|computation placer already registered"
)

_lock = threading.Lock()


def silence(level: str) -> None:
    """Silence TensorFlow's start-up chatter in this process unless ``level`` is DEBUG.

    Call before TensorFlow is imported (``sswe-node`` does it before running a sub-command,
    its worker processes when they start). A ``TF_CPP_MIN_LOG_LEVEL`` already in the
    environment is kept; child processes inherit the one set here.

    Parameters
    ----------
    level : str
        The log level of the command (``"DEBUG"`` leaves everything as TensorFlow prints it).
    """
    if level.upper() == "DEBUG":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's own logging: errors only
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, _QuietFinder) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietFinder())


def is_chatter(line: str) -> bool:
    """Return whether ``line`` is TensorFlow start-up chatter."""
    return CHATTER.search(line) is not None


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the other finders and wraps its loader (once)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)  # the first import only; also avoids finding ourselves
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader with file descriptor 2 captured, then replays all but chatter."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with _lock, tempfile.TemporaryFile() as captured:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(captured.fileno(), 2)
            try:
                self._loader.exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                kept = [
                    line
                    for line in captured.read().splitlines(keepends=True)
                    if not is_chatter(line.decode("utf-8", "replace"))
                ]
                if kept:
                    os.write(2, b"".join(kept))

    def __getattr__(self, name: str) -> Any:  # is_package, get_code... of the real loader
        return getattr(self._loader, name)
