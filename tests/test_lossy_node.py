"""A JPEG baseline source sent with dcmtk ``storescu -xy`` to a running node (issue 9).

The node's outputs of a lossy source say so (Lossy Image Compression "01" with the source's
ratio and method, PS3.3 C.7.6.1.1.5) in the Parametric Map and the Secondary Capture, stay
dciodvfy-clean, and the case records the scale read from the bar's labels.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from sswe_node.config import load_settings
from sswe_node.node.store import CaseStore
from sswe_node.outputs.lossy import lossy_history
from tests.node_support import ServeProcess, node_sections, sswe_node, write_config
from tests.peers import dcmtk_env

PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A JPEG baseline dual capture labelled 0-180 kPa, and an uncompressed B-mode.

    The JPEG file's own Lossy Image Compression attributes are removed: the node must learn
    the history from the transfer syntax alone.
    """
    from training.simulate import write_archive

    root = tmp_path_factory.mktemp("lossy") / "archive"
    write_archive(root, patients=1, seed=0, images_per_patient=1, scales="random", jpeg=True,
                  opacity=1.0, other_scanner=False)  # fmt: skip
    index = json.loads((root / "archive.json").read_text())
    found = {e["kind"]: root / e["path"] for e in index["instances"]}
    dual = pydicom.dcmread(found["dual"])
    assert str(dual.file_meta.TransferSyntaxUID) == JPEG_BASELINE
    assert next(e for e in index["instances"] if e["kind"] == "dual")["scale_max"] == 180.0
    for keyword in ("LossyImageCompression", "LossyImageCompressionRatio",
                    "LossyImageCompressionMethod"):  # fmt: skip
        if keyword in dual:
            delattr(dual, keyword)
    found["dual"] = root / "dual-without-lossy-attributes.dcm"
    dual.save_as(found["dual"], enforce_file_format=True)
    return found


def test_jpeg_source_outputs_say_lossy(sources, tiny_model_dir, dciodvfy_errors, tmp_path):
    sections = node_sections(
        tmp_path,
        model={"name": tiny_model_dir.name, "models_dir": str(tiny_model_dir.parent)},
        processing={"batch_size": 4, "batch_wait_seconds": 0.2},
    )
    config = write_config(tmp_path / "node.toml", sections)
    port = int(sections["node"]["port"])
    node = ServeProcess(config, port, tmp_path / "serve.log")
    try:
        for path, syntax in ((sources["dual"], "-xy"), (sources["bmode"], "-xe")):
            subprocess.run(
                ["/usr/bin/storescu", syntax, "-aec", "SSWE_NODE", "127.0.0.1", str(port),
                 str(path)],
                env=dcmtk_env(), check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        store = CaseStore(load_settings(config).node.database_url)
        deadline = time.monotonic() + 180
        while True:
            cases = store.list_cases(limit=None)
            if len(cases) == 2 and all(
                c["status"] not in ("received", "processing") for c in cases
            ):
                break
            assert time.monotonic() < deadline, f"not processed: {cases}\n{node.log()[-2000:]}"
            time.sleep(0.3)
        store.close()
    finally:
        assert node.terminate() == 0

    listed = json.loads(sswe_node("cases", "--config", str(config), "--json").stdout)
    cases = {c["layout"]: c for c in listed}
    assert {c["status"] for c in listed} == {"done"}, listed
    assert cases["dual-swe"]["scale"] == {
        "min": 0.0, "max": 180.0, "unit": "kPa", "source": "image-labels",
    }  # fmt: skip
    assert cases["bmode"]["scale"]["source"] == "manifest"

    received = {
        str(ds.SOPInstanceUID): ds
        for ds in map(pydicom.dcmread, sorted((tmp_path / "storage").rglob("*.dcm")))
        if ds.Modality == "US"
    }
    jpeg_source = next(
        ds for ds in received.values() if ds.file_meta.TransferSyntaxUID == JPEG_BASELINE
    )
    history = lossy_history(jpeg_source)
    assert history is not None and history.methods == ("ISO_10918_1",) and history.ratios[0] > 2

    outputs = [
        pydicom.dcmread(p)
        for p in sorted((tmp_path / "storage").rglob("*.dcm"))
        if pydicom.dcmread(p, stop_before_pixels=True).Modality == "OT"
    ]
    assert len(outputs) == 4  # a Parametric Map and a Secondary Capture per source
    for ds in outputs:
        source_uid = ds.SourceImageSequence[0].ReferencedSOPInstanceUID
        lossy = received[source_uid].file_meta.TransferSyntaxUID == JPEG_BASELINE
        if lossy:
            assert ds.LossyImageCompression == "01"
            assert list(ds.LossyImageCompressionMethod) == ["ISO_10918_1"] or (
                ds.LossyImageCompressionMethod == "ISO_10918_1"
            )
            assert abs(float(ds.LossyImageCompressionRatio) - history.ratios[0]) < 0.01
            if ds.SOPClassUID == PARAMETRIC_MAP:
                assert "0-180 kPa, from the labels printed beside" in ds.DerivationDescription
        else:
            assert ds.LossyImageCompression == "00"
            assert "LossyImageCompressionRatio" not in ds
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], ds.SOPClassUID
