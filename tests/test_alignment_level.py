"""Alignment that keeps each frame's output level, and frames run at the model's spacing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sswe_node.imaging.grid import to_grid
from sswe_node.model import _resize, load_model

pytest.importorskip("keras")

from tests.toydata import blob_frames, tiny_trusted_package  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> object:
    folder = tmp_path_factory.mktemp("models") / "tiny-level"  # init 0.2: not saturated
    return load_model(tiny_trusted_package(folder, 0.2, sd_scale=2.0), device="cpu", batch_size=16)


def _configured(model, **changes):
    model.inference = dataclasses.replace(model.inference, **changes)
    return model


def _shifting_aligner(latent):
    """Every frame aligned by a large fixed shift and scale (it moves the output level)."""
    n, f = latent.shape
    return np.full((n, f), 1.5, np.float32), np.full((n, f), 0.2, np.float32), np.ones(n, bool)


def test_aligned_frames_keep_their_output_level(model) -> None:
    images = blob_frames(6, seed=3, bright=0.2)
    plain = model.infer(images, passes=1).values
    _configured(model, align_level="none")
    moved = model.infer(images, passes=1, aligner=_shifting_aligner).values
    _configured(model, align_level="frame")
    kept = model.infer(images, passes=1, aligner=_shifting_aligner).values
    # the alignment moves the level; kept, each frame's mean is the unaligned one's
    assert np.abs(moved.mean(axis=(1, 2)) - plain.mean(axis=(1, 2))).min() > 0.1
    np.testing.assert_allclose(kept.mean(axis=(1, 2)), plain.mean(axis=(1, 2)), atol=1e-3)
    assert not np.allclose(kept, plain, atol=1e-3)  # the pattern is the aligned one
    centred = [x - x.mean(axis=(1, 2), keepdims=True) for x in (kept, moved)]
    np.testing.assert_allclose(centred[0], centred[1], atol=1e-4)
    # with MC passes the shift is per frame: kept - moved is a constant map of each frame
    mc_moved = _configured(model, align_level="none").infer(images, aligner=_shifting_aligner)
    mc_kept = _configured(model, align_level="frame").infer(images, aligner=_shifting_aligner)
    delta = (mc_kept.values - mc_moved.values).reshape(len(images), -1)
    assert float(np.ptp(delta, axis=1).max()) < 1e-3 and np.abs(delta).min() > 0.1
    np.testing.assert_array_equal(mc_kept.sd, mc_moved.sd)  # the sd is not touched


def test_frames_without_aligner_or_far_spacing_are_unchanged(model) -> None:
    images = blob_frames(5, seed=4)
    base = model.infer(images)
    _configured(model, resample_tolerance=0.3)
    try:
        at = np.tile(np.asarray(model.manifest.spacing_mm, np.float64) * 1.2, (5, 1))
        at[1] = np.nan  # unknown spacing
        near = model.infer(images, spacing=at)
        np.testing.assert_array_equal(near.values, base.values)
        np.testing.assert_array_equal(near.sd, base.sd)
        np.testing.assert_array_equal(near.latent, base.latent)
    finally:
        _configured(model, resample_tolerance=0.0)
    far = model.infer(images, spacing=np.tile(np.asarray(model.manifest.spacing_mm) * 0.6, (5, 1)))
    np.testing.assert_array_equal(far.values, base.values)  # tolerance 0: never resampled


def test_working_shapes_round_and_clip(model) -> None:
    spacing = np.asarray(model.manifest.spacing_mm, np.float64)
    cells = np.stack(
        [spacing, spacing * [0.647, 1.02], spacing * [1.0, 1.61], spacing * [0.1, 9.0]]
    )
    _configured(model, resample_tolerance=0.3)
    try:
        shapes = model.working_shapes(np.vstack([cells, [[np.nan, np.nan]]]), 5)
    finally:
        _configured(model, resample_tolerance=0.0)
    assert shapes.tolist() == [[96, 64], [64, 64], [96, 104], [48, 128], [96, 64]]
    assert model.working_shapes(cells, 4).tolist() == [[96, 64]] * 4  # tolerance 0


def test_a_frame_of_another_spacing_runs_at_the_models(model) -> None:
    images = blob_frames(4, seed=6)
    spacing = np.asarray(model.manifest.spacing_mm, np.float64)
    cells = np.tile(spacing, (4, 1))
    cells[2:] *= [0.647, 1.0]  # two frames of a shallower field of view
    seen = {}

    def aligner(latent):
        seen["features"] = latent.shape
        return np.ones_like(latent), np.zeros_like(latent), np.zeros(len(latent), bool)

    base = model.infer(images, passes=1)
    _configured(model, resample_tolerance=0.3)
    try:
        got = model.infer(images, passes=1, spacing=cells, aligner=aligner)
        latent = model.reference_latent(images, cells)
    finally:
        _configured(model, resample_tolerance=0.0)
    assert got.values.shape == (4, 96, 64) and seen["features"] == (4, 24 * 16 * 8)
    np.testing.assert_array_equal(got.values[:2], base.values[:2])
    assert not np.allclose(got.values[2:], base.values[2:], atol=1e-3)
    np.testing.assert_array_equal(latent, got.latent)
    np.testing.assert_array_equal(latent[:2], base.latent[:2])
    # the resampled frames are what the network gives on the resampled input, regridded
    small = _resize(images[2:], (64, 64))
    net = model._network
    pad = model.inference.pad
    x = np.pad(small, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")[..., None]
    direct = np.asarray(net(x, training=False))[:, pad : pad + 64, pad : pad + 64, 0]
    expected = _resize(direct, (96, 64)) * np.float32(model.manifest.scale)
    np.testing.assert_allclose(got.values[2:], expected, atol=2e-3)


def test_resize_is_the_readers_bilinear_regridding() -> None:
    rng = np.random.default_rng(2)
    maps = rng.random((3, 37, 23)).astype(np.float32)
    ours = _resize(maps, (96, 64))
    theirs = np.stack([to_grid(m, (96, 64)) for m in maps])
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    stacked = rng.random((2, 24, 16, 5)).astype(np.float32)
    np.testing.assert_allclose(
        _resize(stacked, (16, 16))[1, :, :, 3], to_grid(stacked[1, :, :, 3], (16, 16)), atol=1e-6
    )
    assert _resize(maps, (37, 23)) is not None and np.array_equal(_resize(maps, (37, 23)), maps)


class _Strong:
    """The store's aligner, its alignment made strong (the tiny network barely moves)."""

    def __init__(self, inner) -> None:
        self.inner, self.level = inner, inner.level

    def __call__(self, latent):
        scale, shift, aligned = self.inner(latent)
        return scale * 1.5, shift + 0.2, aligned


def test_the_scanner_keeps_its_mean_output_level(model) -> None:
    """``align_level = "scanner"``: a key's aligned frames are shifted by the running mean of
    the level their alignment took away, kept in the store beside the latent statistics."""
    from sswe_node.alignment import LEVEL_PREFIX, MemoryScannerStats, make_aligner

    images = np.concatenate([blob_frames(4, seed=5), blob_frames(4, seed=6, bright=0.3)])
    plain = model.infer(images, passes=1).values
    keys = ["SIM B [bmode]"] * 8

    def run(level: str, store: MemoryScannerStats):
        _configured(model, align_level=level)
        return model.infer(
            images, passes=1, aligner=_Strong(make_aligner(model, keys, store, min_frames=1))
        )

    moved = run("none", MemoryScannerStats()).values
    store = MemoryScannerStats()
    kept = run("scanner", store)
    assert kept.aligned.all()
    change = plain.mean(axis=(1, 2)) - moved.mean(axis=(1, 2))
    assert np.abs(change).min() > 0.05 and np.ptp(change) > 2e-3  # frames differ in change
    # one shift for every frame of the key: the key's mean level is the unaligned one
    np.testing.assert_allclose(kept.values - moved, change.mean(), atol=1e-3)
    np.testing.assert_allclose(kept.values.mean(), plain.mean(), atol=1e-3)
    level = store.get("tiny-level", LEVEL_PREFIX + keys[0])
    assert level.count == 8 and store.get("tiny-level", keys[0]).count == 8
    np.testing.assert_allclose(level.mean[0] * model.manifest.scale, change.mean(), atol=1e-3)
    # a second batch of the key: the running mean over both
    again = run("scanner", store)
    assert store.get("tiny-level", LEVEL_PREFIX + keys[0]).count == 16
    np.testing.assert_allclose(again.values, kept.values, atol=1e-3)


def test_the_scanner_keeps_its_mean_map(model) -> None:
    """``align_level = "position"``: each pixel of a key's aligned frames gets back the running
    mean of what the alignment took away there; the key's mean map stays the unaligned one."""
    from sswe_node.alignment import POSITION_LEVEL_PREFIX, MemoryScannerStats, make_aligner

    images = np.concatenate([blob_frames(4, seed=5), blob_frames(4, seed=6, bright=0.3)])
    plain = model.infer(images, passes=1).values
    keys = ["SIM B [bmode]"] * 8

    def run(level: str, store: MemoryScannerStats, passes: int = 1):
        _configured(model, align_level=level)
        aligner = _Strong(make_aligner(model, keys, store, min_frames=1))
        return model.infer(images, passes=passes, aligner=aligner)

    moved = run("none", MemoryScannerStats()).values
    store = MemoryScannerStats()
    kept = run("position", store)
    change = plain - moved
    # the change varies over the map and between frames: neither one number nor each frame's
    assert np.ptp(change.mean(axis=0)) > 0.05 and np.ptp(change - change.mean(axis=0)) > 2e-3
    assert kept.aligned.all() and 0.0 < moved.min() and moved.max() < model.manifest.scale
    np.testing.assert_allclose(
        kept.values - moved, np.broadcast_to(change.mean(axis=0), change.shape), atol=1e-3
    )
    np.testing.assert_allclose(kept.values.mean(axis=0), plain.mean(axis=0), atol=1e-3)
    # how each frame differs from the key's mean map is the aligned one's, not the plain one's
    np.testing.assert_allclose(
        kept.values - kept.values.mean(axis=0), moved - moved.mean(axis=0), atol=1e-3
    )
    assert not np.allclose(
        kept.values - kept.values.mean(axis=0), plain - plain.mean(axis=0), atol=1e-3
    )
    level = store.get("tiny-level", POSITION_LEVEL_PREFIX + keys[0])
    assert level.count == 8 and level.mean.shape == (96 * 64,)
    np.testing.assert_allclose(
        level.mean.reshape(96, 64) * model.manifest.scale, change.mean(axis=0), atol=1e-3
    )
    again = run("position", store)  # a second batch: the running mean over both
    assert store.get("tiny-level", POSITION_LEVEL_PREFIX + keys[0]).count == 16
    np.testing.assert_allclose(again.values, kept.values, atol=1e-3)
    # with MC passes the same per-pixel shift is added to the MC mean; the sd is untouched
    mc_moved = run("none", MemoryScannerStats(), passes=3)
    mc_kept = run("position", MemoryScannerStats(), passes=3)
    np.testing.assert_array_equal(mc_kept.sd, mc_moved.sd)
    np.testing.assert_allclose(mc_kept.values - mc_moved.values, kept.values - moved, atol=1e-3)
    # an aligner that keeps nothing per key: each frame's own change of the mean ("frame")
    _configured(model, align_level="position")
    alone = model.infer(images, passes=1, aligner=_shifting_aligner).values
    _configured(model, align_level="frame")
    framewise = model.infer(images, passes=1, aligner=_shifting_aligner).values
    np.testing.assert_allclose(alone, framewise, atol=1e-6)


def test_the_mean_map_is_kept_in_the_case_store_across_a_restart(model, tmp_path) -> None:
    """The node's store keeps the per-pixel running mean like memory does, and a restart
    resumes it."""
    from sswe_node.alignment import POSITION_LEVEL_PREFIX, MemoryScannerStats, make_aligner
    from sswe_node.node.scanner_stats import StoredScannerStats
    from sswe_node.node.store import CaseStore

    images = np.concatenate([blob_frames(3, seed=9), blob_frames(3, seed=10, bright=0.3)])
    keys = ["SIM B [bmode]"] * 6
    _configured(model, align_level="position")
    url = f"sqlite:///{tmp_path / 'cases.db'}"
    memory = MemoryScannerStats()
    want = [
        model.infer(
            images, passes=1, aligner=_Strong(make_aligner(model, keys, memory, min_frames=1))
        )
        for _ in range(2)
    ]
    got = []
    for _ in range(2):  # two batches, the store closed and opened again in between
        store = CaseStore(url)
        try:
            aligner = make_aligner(model, keys, StoredScannerStats(store), min_frames=1)
            got.append(model.infer(images, passes=1, aligner=_Strong(aligner)))
        finally:
            store.close()
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a.values, b.values, atol=1e-5)
    store = CaseStore(url)
    try:
        counts = StoredScannerStats(store).all()
    finally:
        store.close()
    assert counts[("tiny-level", POSITION_LEVEL_PREFIX + keys[0])] == 12
    assert counts[("tiny-level", keys[0])] == 12


def test_the_mean_map_is_kept_at_another_working_shape(model) -> None:
    """Frames run at the model's spacing keep the key's mean map on the grid too."""
    from sswe_node.alignment import MemoryScannerStats, make_aligner

    images = blob_frames(6, seed=8, bright=0.2)
    cells = np.tile(np.asarray(model.manifest.spacing_mm, np.float64), (6, 1))
    cells[3:] *= [0.647, 1.0]
    keys = ["SIM B [bmode]"] * 6
    _configured(model, resample_tolerance=0.3)
    try:
        plain = model.infer(images, passes=1, spacing=cells).values
        _configured(model, align_level="position")
        aligner = _Strong(make_aligner(model, keys, MemoryScannerStats(), min_frames=1))
        kept = model.infer(images, passes=1, spacing=cells, aligner=aligner).values
    finally:
        _configured(model, resample_tolerance=0.0)
    assert kept.shape == plain.shape == (6, 96, 64)
    assert not np.allclose(kept, plain, atol=1e-3)
    # bilinear regridding is linear: the key's mean map is the unaligned one's
    np.testing.assert_allclose(kept.mean(axis=0), plain.mean(axis=0), atol=1e-3)


@pytest.mark.parametrize("passes", [1, 3])
def test_decoding_the_kept_encoding_equals_encoding_again(
    model, passes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small calls decode the encoding infer keeps; large ones encode again: the same bits."""
    import sswe_node.model

    images = blob_frames(5, seed=4, bright=0.1)
    _configured(model, align_level="frame")
    model._calls.clear()
    kept = model.infer(images, passes=passes, aligner=_shifting_aligner)
    assert ("decode", (96, 64)) in model._calls and ("mc", 1, (96, 64)) not in model._calls
    monkeypatch.setattr(sswe_node.model, "KEPT_ENCODINGS", 2)
    again = model.infer(images, passes=passes, aligner=_shifting_aligner)
    assert ("mc", 1, (96, 64)) in model._calls  # encoded again, without the decode-only call
    np.testing.assert_array_equal(kept.values, again.values)
    np.testing.assert_array_equal(kept.latent, again.latent)
    if passes > 1:
        np.testing.assert_array_equal(kept.sd, again.sd)
