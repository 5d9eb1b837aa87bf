"""Output builders' caches: what is drawn or written once gives the same outputs as drawn anew."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pydicom

from sswe_node.outputs import build_parametric_map, build_secondary_capture, header, render

MODEL = SimpleNamespace(
    name="prostate-sim", version="1.2.0", quantity="youngs-modulus", unit="kPa",
    colour_bar=(0.0, 70.0),
)  # fmt: skip
_CLOCK = {
    "InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
    "DateOfSecondaryCapture", "TimeOfSecondaryCapture",
}  # fmt: skip


def _arrays(shape: tuple[int, int], seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    bmode = (rng.random(shape) * 255).astype(np.float32)
    values = rng.uniform(-5, 80, shape).astype(np.float32)
    values[:4, :6] = np.nan
    sd = rng.gamma(2.0, 3.0, shape).astype(np.float32)
    sd[np.isnan(values)] = np.nan
    return bmode, values, sd


def _clear_caches() -> None:
    render._frame.cache_clear()
    render._blend_table.cache_clear()
    render._colour_bar.cache_clear()
    header._template.cache_clear()
    header._STUDY_TEMPLATES = header._StudyTemplates(header.STUDY_CACHE_SIZE)


def _elements(ds: pydicom.Dataset) -> list:
    """Every element (file meta included) but the clock's, as (tag, VR, value repr)."""
    items = [(e.tag, e.VR, repr(e.value)) for e in ds.file_meta]
    return items + [(e.tag, e.VR, repr(e.value)) for e in ds if e.keyword not in _CLOCK]


def _outputs(source: pydicom.Dataset, shape: tuple[int, int], **kwargs) -> list:
    bmode, values, sd = _arrays(shape, **kwargs)
    roi = (10, 20, 10 + shape[0], 20 + shape[1])
    pm = build_parametric_map(
        source, values, roi=roi, model=MODEL, spacing_mm=(0.2, 0.3), sd=sd, scale=(0, 70)
    )
    sc = build_secondary_capture(
        source, values, bmode, model=MODEL, scale=(0, 70), sd=sd, sd_threshold=6.0,
        out_of_distribution=True,
    )  # fmt: skip
    plain = build_secondary_capture(source, values, bmode, model=MODEL)
    return [pm, sc, plain]


def test_cached_outputs_equal_those_built_with_empty_caches(make_us_source) -> None:
    source = make_us_source()
    for shape in ((120, 160), (300, 410)):
        _clear_caches()
        cold = _outputs(source, shape)
        warm = _outputs(source, shape)
        assert header._template.cache_info().currsize == 2  # map (with sd), capture
        assert len(header._STUDY_TEMPLATES) == 2
        assert render._frame.cache_info().hits == 2  # with banner and legend, plain
        _clear_caches()
        again = _outputs(source, shape)
        for a, b, c in zip(cold, warm, again, strict=True):
            assert _elements(a) == _elements(b) == _elements(c)


def test_another_geometry_gets_its_own_rendering(make_us_source) -> None:
    source = make_us_source()
    _clear_caches()
    small = _outputs(source, (120, 160))[1]
    large = _outputs(source, (300, 410))[1]
    assert (small.Rows, small.Columns) != (large.Rows, large.Columns)
    assert render._frame.cache_info().currsize == 4  # two geometries, two header variants
    # The larger geometry, drawn after the smaller one was cached, is as drawn first.
    _clear_caches()
    assert _elements(_outputs(source, (300, 410))[1]) == _elements(large)


def test_the_capture_frame_follows_scale_and_texts() -> None:
    bmode, values, sd = _arrays((120, 160))
    kwargs = {"title": "sSWE test", "unit": "kPa"}
    first = render.render_capture(bmode, values, (0, 70), **kwargs)
    other_scale = render.render_capture(bmode, values, (0, 100), **kwargs)
    banner = render.render_capture(bmode, values, (0, 70), banner=render.OOD_BANNER, **kwargs)
    assert not np.array_equal(first, other_scale)  # overlay and bar labels differ
    assert banner.shape[0] > first.shape[0]  # one more header line
    _clear_caches()
    np.testing.assert_array_equal(
        render.render_capture(bmode, values, (0, 100), **kwargs), other_scale
    )


def test_the_study_header_follows_the_source(make_us_source) -> None:
    source = make_us_source()
    first = _outputs(source, (120, 160))
    changed = copy.deepcopy(source)
    changed.PatientName = "Other^Patient"
    changed.Manufacturer = "Another Vendor"
    changed.BodyPartExamined = "THYROID"
    second = _outputs(changed, (120, 160))
    for a, b in zip(first, second, strict=True):
        assert str(b.PatientName) == "Other^Patient" != str(a.PatientName)
        assert b.ContributingEquipmentSequence[0].Manufacturer == "Another Vendor"
        assert b.BodyPartExamined == "THYROID" and "Laterality" not in b
    # Back to the first source: the first outputs again (nothing of the second kept).
    third = _outputs(source, (120, 160))
    for a, c in zip(first, third, strict=True):
        assert _elements(a) == _elements(c)


def test_outputs_do_not_share_cached_elements(make_us_source) -> None:
    source = make_us_source()
    first = _outputs(source, (120, 160))
    for ds in first:  # a caller changing an output must not change the next ones
        ds.ContributingEquipmentSequence[-1].Manufacturer = "changed"
        ds.SeriesDescription = "changed"
        ds.ImageType.append("CHANGED")
        if "SharedFunctionalGroupsSequence" in ds:
            ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = [9, 9]
    second = _outputs(source, (120, 160))
    for ds in second:
        assert ds.ContributingEquipmentSequence[-1].Manufacturer == "sswe-node"
        assert ds.SeriesDescription.startswith("SYNTHETIC SWE")
        assert "CHANGED" not in ds.ImageType
    pixel = second[0].SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in pixel] == [0.2, 0.3]


def test_each_capture_is_drawn_into_pixels_of_its_own() -> None:
    kwargs = {"title": "sSWE test", "unit": "kPa", "legend": "hatched"}
    drawn = []
    # Twice each geometry (the second an enlarged small region), kept while the next is drawn.
    for shape, seed in [((200, 150), 1), ((100, 80), 2), ((200, 150), 3), ((100, 80), 4)]:
        bmode, values, sd = _arrays(shape, seed)
        picture = render.render_capture(
            bmode, values, (0, 70), uncertain=sd, threshold=6.0, **kwargs
        )
        drawn.append((picture, picture.copy()))
    for picture, copied in drawn:
        np.testing.assert_array_equal(picture, copied)
    assert not np.array_equal(drawn[0][0], drawn[2][0])  # same geometry, other pixels
