"""Peak memory (VmHWM) of `sswe-node serve` per hostile or heavy input (issue 11, item 4).

Each input goes to a fresh node (default configuration and model, SQLite, loopback) started
as a subprocess; the node's peak resident set is read from ``/proc/PID/status`` once the
input has been answered and its case has finished. The goal: at most 1.5 GB whatever arrives.

    .venv/bin/python benchmarks/bench_memory.py                  # the issue's sizes
    .venv/bin/python benchmarks/bench_memory.py --scale 0.25     # a quarter of them

Inputs: ``idle`` (the node alone, after its model is loaded), ``deflate-bomb`` (1 MB of
deflate inflating to 1 GiB), ``large`` (one 200 MB instance), ``backlog`` (8 x 200 MB received
while processing is paused, then processed after a restart); ``--inputs large`` runs some.

``--reading`` measures the reading alone, each in a fresh process: the worker's file reading
and ``read_instance`` (16 evenly spaced frames) of one 200 MB multi-frame instance, read whole
(``dcmread(path)``, as before lazy frames) and lazily (``dcmread(path, defer_size=...)``:
only the frames used are read and decoded), native and RLE-encapsulated; peak resident set
(VmHWM) above the process's own after its imports.

    .venv/bin/python benchmarks/bench_memory.py --reading
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid
from pynetdicom import AE, _config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bombs import write_deflate_bomb  # noqa: E402
from tests.conftest import _make_us_source  # noqa: E402
from tests.node_support import ServeProcess, node_sections, write_config  # noqa: E402
from tests.peers import dcmtk_env, free_port  # noqa: E402

MIB = 1024 * 1024


def _hwm_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # gone meanwhile
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(c) for c in task.read_text().split()]
        except OSError:
            continue
    return found + [g for c in found for g in _children(c)]


def peak_mb(pid: int) -> float:
    """Return the peak resident set (VmHWM) of the node in MiB: its own plus its children's.

    The node may run its workers and sender as child processes; the sum of each process's
    peak is an upper bound of the peak of their sum.
    """
    return _hwm_mb(pid) + sum(_hwm_mb(child) for child in _children(pid))


def large_instance(path: Path, megabytes: float, *, readable: bool = False) -> Path:
    """Write an Ultrasound Multi-frame Image of about ``megabytes`` (480 x 640 RGB frames).

    The frames are random colours (``readable``: a grey speckle B-mode that is read).
    """
    frames = max(1, round(megabytes * MIB / (480 * 640 * 3)))
    ds = _make_us_source(rows=480, cols=640, frames=1, regions=readable)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if readable:
        grey = np.frombuffer(ds.PixelData, dtype=np.uint8).reshape(480, 640)
        frame = np.repeat(grey[:, :, None], 3, axis=2).tobytes()
    else:
        frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8).tobytes()
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.NumberOfFrames = frames
    ds.PixelData = frame * frames
    ds.save_as(path, enforce_file_format=True)
    return path


_READ_SCRIPT = """
import sys
from pathlib import Path
import pydicom
from sswe_node.imaging import read_instance
from sswe_node.imaging.pixels import LAZY_PIXEL_BYTES


def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


path, mode = sys.argv[1], sys.argv[2]
pydicom.dcmread(path, stop_before_pixels=True)  # imports and caches warmed
base = hwm()
defer = None if mode == "whole" else LAZY_PIXEL_BYTES
ds = pydicom.dcmread(path, defer_size=defer)
readings = read_instance(ds, max_frames=16)
inputs = [r.model_input() for r in readings]
print(len(readings), base, hwm())
"""


def reading_peak(path: Path, mode: str) -> tuple[int, float, float]:
    """Return (frames read, VmHWM after imports, VmHWM after reading) in MiB, fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", _READ_SCRIPT, str(path), mode],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    frames, base, peak = done.stdout.split()
    return int(frames), float(base), float(peak)


def rle_instance(path: Path, megabytes: float) -> Path:
    """Write a multi-frame instance of about ``megabytes`` (decoded) in RLE Lossless."""
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import RLELossless

    big = large_instance(path.with_suffix(".native.dcm"), megabytes, readable=True)
    ds = pydicom.dcmread(big)
    one = pydicom.dcmread(big)
    one.NumberOfFrames = 1
    one.PixelData = ds.PixelData[: 480 * 640 * 3]
    one.compress(RLELossless, encoding_plugin="pydicom")  # frames alike: encode one, repeat it
    (frame,) = generate_frames(one.PixelData, number_of_frames=1)
    ds.PixelData = encapsulate([frame] * int(ds.NumberOfFrames))
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.save_as(path, enforce_file_format=True)
    big.unlink()
    return path


def reading(work: Path, megabytes: float) -> dict[str, float | str]:
    """Peak memory of reading one large multi-frame instance, whole and lazily."""
    results: dict[str, float | str] = {}
    files = {"native": large_instance(work / "native.dcm", megabytes, readable=True)}
    files["rle"] = rle_instance(work / "rle.dcm", megabytes)
    for name, path in files.items():
        size = path.stat().st_size / MIB
        for mode in ("whole", "lazy"):
            frames, base, peak = reading_peak(path, mode)
            results[f"{name}-{mode}"] = peak - base
            results[f"{name}-{mode}-frames"] = f"{frames} frames read, file {size:.0f} MiB"
    return results


def send_as_is(port: int, path: Path, syntax: str) -> int:
    """C-STORE a file's bytes unchanged (pynetdicom chunked send); return the status."""
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(UltrasoundImageStorage, syntax)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.3.1", syntax)
    ae.dimse_timeout = ae.network_timeout = 600
    assoc = ae.associate("127.0.0.1", port, ae_title="SSWE_NODE")
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        return int(assoc.send_c_store(path).Status)
    finally:
        assoc.release()


def storescu(port: int, files: list[Path]) -> None:
    subprocess.run(
        ["/usr/bin/storescu", "-aec", "SSWE_NODE", "127.0.0.1", str(port), *map(str, files)],
        env=dcmtk_env(), check=True, capture_output=True, timeout=1800,
    )  # fmt: skip


def wait_cases_finished(serve: ServeProcess, count: int, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while serve.log().count("event=case-") < count:
        if time.monotonic() > deadline:
            raise TimeoutError(serve.log()[-2000:])
        time.sleep(0.5)


def node(work: Path, name: str, paused: bool = False) -> tuple[ServeProcess, Path]:
    folder = work / name
    folder.mkdir(exist_ok=True)
    port = free_port()
    sections = node_sections(folder, port=port, processing={"paused": paused})
    config = write_config(folder / "node.toml", sections)
    serve = ServeProcess(config, port, folder / "serve.log")
    if not paused:
        serve.wait_log("event=warm-up", timeout=300)
    return serve, config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--reading", action="store_true", help="only the reading of a large multi-frame instance"
    )
    parser.add_argument(
        "--inputs",
        default="idle,deflate-bomb,large,backlog",
        help="comma-separated node inputs to run (default: all)",
    )
    args = parser.parse_args(argv)
    inputs = set(args.inputs.split(","))
    results: dict[str, float | str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        if args.reading:
            results = reading(work, 200 * args.scale)
            inputs = set()
        if "idle" in inputs:
            serve, _ = node(work, "idle")
            results["idle"] = peak_mb(serve.process.pid)
            serve.terminate()

        if "deflate-bomb" in inputs:
            bomb = work / "bomb.dcm"
            write_deflate_bomb(bomb, generate_uid(), int(1024 * MIB * args.scale))
            serve, _ = node(work, "bomb")
            status = send_as_is(serve.port, bomb, DeflatedExplicitVRLittleEndian)
            results["deflate-bomb"] = peak_mb(serve.process.pid)
            results["deflate-bomb-status"] = f"0x{status:04X}"
            serve.terminate()

        if "large" in inputs:
            big = large_instance(work / "large.dcm", 200 * args.scale)
            serve, _ = node(work, "large")
            storescu(serve.port, [big])
            wait_cases_finished(serve, 1)
            results["large"] = peak_mb(serve.process.pid)
            serve.terminate()
            big.unlink()

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        work = Path(tmp)
        if "backlog" not in inputs:
            return _print(results, args.json)
        copies = []
        for i in range(8):
            copies.append(large_instance(work / f"backlog-{i}.dcm", 200 * args.scale))
        serve, config = node(work, "backlog", paused=True)
        storescu(serve.port, copies)
        serve.terminate()
        text = config.read_text().replace("paused = true", "paused = false")
        config.write_text(text)
        serve = ServeProcess(config, serve.port, work / "backlog" / "serve.log")
        wait_cases_finished(serve, 8)
        results["backlog"] = peak_mb(serve.process.pid)
        serve.terminate()
    return _print(results, args.json)


def _print(results: dict[str, float | str], as_json: bool) -> int:
    if as_json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            shown = f"{value:8.0f} MiB" if isinstance(value, float) else value
            print(f"{name:22s} {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
