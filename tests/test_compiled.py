"""The compiled kernels where no cache directory can be written (sswe_node.compiled)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

#: One call of a kernel of each compiled module, and the kernel it compiles.
CALLS = {
    "marks": (
        "from sswe_node.imaging import kernels\n"
        "owners, n = kernels.components(np.array([0, 1, 5], dtype=np.intp), 4)\n"
        "assert n == 1 and owners.tolist() == [1, 1, 1], (owners, n)\n",
        "sswe_node.imaging.kernels.components",
    ),
    "regridding": (
        "from sswe_node.imaging import grid\n"
        "v, s, _, _ = grid.from_grid_masked(np.ones((4, 3)), np.ones((4, 3)), (9, 7))\n"
        "assert (v == 1).all() and (s == 1).all()\n",
        "sswe_node.imaging.grid_kernels.second_pass",
    ),
    "outputs": (
        "from sswe_node.outputs import kernels\n"
        "out = np.empty(3, np.float32)\n"
        "assert kernels.copy_range(np.array([3, 1, 2], np.float32), out) == (1.0, 3.0)\n",
        "sswe_node.outputs.kernels.copy_range",
    ),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_kernels_work_where_no_cache_directory_can_be_written(name: str) -> None:
    call, compiled = CALLS[name]
    code = (
        "import numpy as np\n"
        f"{call}"
        "from sswe_node.compiled import UNCACHED\n"
        f"assert {compiled!r} in UNCACHED, UNCACHED\n"
    )
    # numba finds no cache location (as with a read-only install and no writable home)
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "IPythonCacheLocator"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
