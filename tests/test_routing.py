"""Model routing: rules, configuration, and one `serve` with two AE titles and two models."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from sswe_node.config import load_settings
from sswe_node.errors import ConfigError
from sswe_node.routing import NO_MODEL, InstanceKeys, choose_model
from tests.node_support import ServeProcess, node_sections, sswe_node, storescu_keep, write_config
from tests.peers import free_port

RULES_TOML = """
[[routing]]
called_ae = "SSWE_THYROID"
model = "thyroid-sim"

[[routing]]
called_ae = ["SSWE_PROSTATE", "SSWE_NODE"]
model = "prostate-sim"

[[routing]]
body_part = "thyroid"
manufacturer = "SSWE Simulator"
model = "thyroid-sim"
"""


def _settings(tmp_path: Path, extra: str = "", unmatched: str = "skip"):
    path = tmp_path / "node.toml"
    path.write_text(f'[model]\nunmatched = "{unmatched}"\n{extra}{RULES_TOML}')
    return load_settings(path)


def test_first_matching_rule_wins(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    rules, default = settings.routing, settings.model.name
    assert choose_model(rules, InstanceKeys(called_ae="SSWE_THYROID"), default, "skip") == (
        "thyroid-sim"
    )
    assert choose_model(rules, InstanceKeys(called_ae="sswe_prostate"), default, "skip") == (
        "prostate-sim"
    )
    keys = InstanceKeys(called_ae="OTHER", body_part="THYROID", manufacturer="SSWE Simulator")
    assert choose_model(rules, keys, default, "skip") == "thyroid-sim"
    keys = InstanceKeys(called_ae="OTHER", body_part="THYROID", manufacturer="ACME")
    assert choose_model(rules, keys, default, "skip") is None
    assert choose_model(rules, keys, default, "default") == default


def test_routing_configuration_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="routing\\[0\\].model"):
        _settings(tmp_path, extra='[[routing]]\ncalled_ae = "X"\n')
    with pytest.raises(ConfigError, match="model.unmatched"):
        _settings(tmp_path, unmatched="maybe")
    with pytest.raises(ConfigError, match="called_ae"):
        _settings(tmp_path, extra='[[routing]]\ncalled_ae = "A_TITLE_FAR_TOO_LONG"\nmodel = "m"\n')


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    from training.simulate import write_archive

    out = {}
    for organ, seed in (("prostate", 41), ("thyroid", 42)):
        folder = tmp_path_factory.mktemp(organ)
        write_archive(folder, patients=1, images_per_patient=1, seed=seed, organ=organ)
        index = json.loads((folder / "archive.json").read_text())
        out[organ] = {r["kind"]: folder / r["path"] for r in index["instances"]}
    return out


def _wait_finished(store, count: int, timeout: float = 240.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        cases = store.list_cases(limit=None)
        finished = [c for c in cases if c["status"] not in ("received", "processing")]
        if len(finished) >= count:
            return cases
        assert time.monotonic() < deadline, cases
        time.sleep(0.3)


@pytest.mark.slow
def test_two_ae_titles_two_models_one_serve(
    tmp_path: Path, archives: dict[str, dict[str, Path]], require_dcmtk: None
) -> None:
    """SSWE_PROSTATE and SSWE_THYROID on one port; real ultrasound is flagged out of
    distribution, and ``sswe-node cases`` shows it (the issue's "done when")."""
    from sswe_node.node.store import CaseStore

    http_port = free_port()
    sections = node_sections(
        tmp_path,
        model={"name": "prostate-sim", "unmatched": "skip"},
        processing={"batch_size": 8, "batch_wait_seconds": 0.3},
        http={"enabled": True, "port": http_port},
    )
    config = write_config(tmp_path / "node.toml", sections)
    config.write_text(config.read_text() + RULES_TOML)
    port = int(sections["node"]["port"])
    serve = ServeProcess(config, port, tmp_path / "serve.log")
    real = [Path(get_testdata_file(n)) for n in ("gdcm-US-ALOKA-16.dcm", "examples_ybr_color.dcm")]
    uid = {
        name: str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        for name, path in {
            "aloka": real[0],
            "ybr": real[1],
            "prostate": archives["prostate"]["dual"],
            "thyroid": archives["thyroid"]["dual"],
            "nobody": archives["prostate"]["bmode"],
        }.items()
    }
    try:
        storescu_keep([*real, archives["prostate"]["dual"]], port, called_aet="SSWE_PROSTATE")
        storescu_keep([archives["thyroid"]["dual"]], port, called_aet="SSWE_THYROID")
        storescu_keep([archives["prostate"]["bmode"]], port, called_aet="SSWE_ELSEWHERE")
        store = CaseStore(load_settings(config).node.database_url)
        try:
            cases = {c["sop_instance_uid"]: c for c in _wait_finished(store, 5)}
        finally:
            store.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
    finally:
        assert serve.terminate() == 0, serve.log()[-3000:]

    for name in ("aloka", "ybr", "prostate"):
        case = cases[uid[name]]
        assert case["called_ae"] == "SSWE_PROSTATE" and case["model_name"] == "prostate-sim"
        assert case["status"] == "done", case
    thyroid = cases[uid["thyroid"]]
    assert (thyroid["called_ae"], thyroid["model_name"], thyroid["status"]) == (
        "SSWE_THYROID",
        "thyroid-sim",
        "done",
    ), thyroid
    assert cases[uid["nobody"]]["status"] == "skipped"
    assert cases[uid["nobody"]]["reason"] == NO_MODEL
    for name in ("aloka", "ybr"):
        assert "out-of-distribution" in cases[uid[name]]["warnings"]
        assert cases[uid[name]]["ood_score"] > 99
    for name in ("prostate", "thyroid"):
        assert cases[uid[name]]["warnings"] == [], cases[uid[name]]
    assert 'sswe_case_warnings{status="out-of-distribution"} 2.0' in metrics

    table = sswe_node("cases", "--config", str(config), "--limit", "0").stdout
    rows = [line for line in table.splitlines() if "out-of-distribution" in line]
    assert len(rows) == 2 and all("SSWE_PROSTATE" in row and "prostate-sim" in row for row in rows)
    assert any("SSWE_THYROID" in line and "thyroid-sim" in line for line in table.splitlines())
