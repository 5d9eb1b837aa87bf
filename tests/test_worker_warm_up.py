"""The worker's warm-up traces every model call a batch makes (the level pass included)."""

from __future__ import annotations

import dataclasses

import pytest

from sswe_node.config import load_settings
from sswe_node.model import load_model
from sswe_node.node.worker import warm_up


@pytest.mark.parametrize("passes", [1, 4])
def test_warm_up_traces_what_a_batch_calls(passes: int) -> None:
    model = load_model("prostate-sim", "models")
    assert model.inference.align_scanners and model.inference.align_level != "none"
    settings = load_settings(overrides={"trust.mc_passes": passes})
    warm_up(model, settings)
    grid = tuple(model.manifest.grid)
    # the encoder once, the MC passes (more than one), and the decoder: the output at T = 1,
    # and the level passes of aligned frames
    expected = {("encode", grid), ("decode", grid)} | (
        {("mc", passes, grid)} if passes > 1 else set()
    )
    assert set(model._calls) == expected


def test_warm_up_without_alignment_traces_no_level_pass() -> None:
    model = load_model("prostate-sim", "models")
    model.inference = dataclasses.replace(model.inference, align_scanners=False)
    warm_up(model, load_settings(overrides={"trust.mc_passes": 4}))
    grid = tuple(model.manifest.grid)
    assert set(model._calls) == {("encode", grid), ("mc", 4, grid)}
