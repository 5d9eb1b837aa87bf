"""Write the node's warm-up captures: three simulated instances in ``sswe_node/data/warm_up/``.

The worker runs them through the whole pipeline at start-up (``sswe_node.node.worker.warm_up``)
so that the reading core's and the output builders' compiled kernels are compiled (a fresh
installation) or loaded (a later process) before the node says it is ready, not at the first
instance a scanner sends. They are the simulator's (``sswe-node simulate``; no patient data):
a dual SWE display, a full-screen B-mode and a second scanner's B-mode, stored Deflated
Explicit VR Little Endian (lossless, read by pydicom alone). Re-run after a change to the
simulator's screens::

    .venv/bin/python scripts/make_warm_up_captures.py
"""

import json
import tempfile
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian

from training.simulate import write_archive

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "sswe_node" / "data" / "warm_up"


def main() -> None:
    """Simulate one patient's three kinds of capture and keep them, deflated."""
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as name:
        archive = Path(name) / "archive"
        write_archive(archive, patients=1, seed=0, images_per_patient=1)
        listing = json.loads((archive / "archive.json").read_text())
        for item in listing["instances"]:
            ds = dcmread(archive / item["path"])
            ds.PatientName = "WARM^UP"
            ds.PatientID = "SSWE-WARM-UP"
            ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
            path = OUT / f"{item['kind']}.dcm"
            ds.save_as(path, enforce_file_format=True)
            print(f"{path.relative_to(ROOT)}: {ds.Rows}x{ds.Columns}, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
