"""The compiled mark kernels find exactly what the numpy code they replaced found."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from sswe_node.imaging import kernels, marks, read_instance
from sswe_node.imaging.pixels import decode_frames_native
from tests import marks_reference as reference


def _elastogram(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A colour box with white lines, text-like dots and light blobs, in a larger frame (view)."""
    frame = rng.integers(0, 256, (h + 7, w + 5, 3), dtype=np.uint8)
    frame[..., 1] //= 2  # mostly coloured, few light pixels
    box = frame[3 : 3 + h, 2 : 2 + w]
    for _ in range(int(rng.integers(0, 6))):  # thin lines
        if rng.random() < 0.5:
            r = int(rng.integers(0, h))
            box[r, int(rng.integers(0, w)) :] = rng.integers(200, 256)
        else:
            c = int(rng.integers(0, w))
            box[int(rng.integers(0, h)) :, c] = rng.integers(200, 256)
    row = int(rng.integers(0, h))
    for col in range(int(rng.integers(0, w)), w, int(rng.integers(3, 12))):  # characters
        box[row : row + int(rng.integers(1, 4)), col : col + int(rng.integers(1, 4))] = 230
    for _ in range(int(rng.integers(0, 3))):  # light blobs (not thin)
        r, c = int(rng.integers(0, h)), int(rng.integers(0, w))
        box[r : r + int(rng.integers(2, 30)), c : c + int(rng.integers(2, 30))] = 240
    light = rng.random((h, w)) < rng.choice([0.0, 0.003, 0.03, 0.2])  # speckle of white
    box[light] = rng.integers(180, 256, (int(light.sum()), 3), dtype=np.uint8)
    return box


@pytest.mark.parametrize("seed", range(4))
def test_white_marks_of_an_elastogram_are_the_numpy_codes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    paths = set()
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        box = _elastogram(rng, h, w)
        expected = reference.graphics_marks(box, grey_image=False)
        assert np.array_equal(marks.graphics_marks(box, grey_image=False), expected)
        other = rng.random((h, w)) < 0.02
        into = marks.graphics_marks(box, grey_image=False, out=other.copy())
        assert np.array_equal(into, expected | other)
        floats = box.astype(np.float32) + rng.uniform(-0.4, 0.4, box.shape).astype(np.float32)
        assert np.array_equal(
            marks.graphics_marks(floats, grey_image=False),
            reference.graphics_marks(floats, grey_image=False),
        )
        paths.add(marks._sparse_marks(np.ascontiguousarray(box)) is None)
    assert paths == {True, False}  # the candidate path and the whole-box path both ran


@pytest.mark.parametrize("seed", range(4))
def test_colour_marks_of_a_grey_panel_are_the_numpy_codes(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    for _ in range(150):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        frame = rng.integers(0, 256, (h + 6, w + 9, 1), dtype=np.uint8).repeat(3, axis=2)
        share = rng.choice([0.0, 0.002, 0.02, 0.3])
        coloured = rng.random(frame.shape[:2]) < share
        frame[coloured] = rng.integers(0, 256, (int(coloured.sum()), 3), dtype=np.uint8)
        near = rng.random(frame.shape[:2]) < 0.05  # channels 38-42 apart: the threshold
        frame[near, 0] = np.minimum(frame[near, 1].astype(int) + rng.integers(38, 43), 255)
        panel = frame[3 : 3 + h, 4 : 4 + w]
        expected = reference.graphics_marks(panel, grey_image=True, white=False)
        assert np.array_equal(marks.graphics_marks(panel, grey_image=True, white=False), expected)
        other = rng.random((h, w)) < 0.05
        into = marks.graphics_marks(panel, grey_image=True, white=False, out=other.copy())
        assert np.array_equal(into, expected | other)
        copy = np.ascontiguousarray(panel)
        assert np.array_equal(marks.graphics_marks(copy, grey_image=True, white=False), expected)


@pytest.mark.parametrize("seed", range(4))
def test_structures_are_the_numpy_codes(seed: int) -> None:
    rng = np.random.default_rng(200 + seed)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 80, 2))
        candidates = rng.random((h, w)) < rng.choice([0.005, 0.03, 0.1, 0.4])
        row = int(rng.integers(0, h))
        for col in range(int(rng.integers(0, w)), w, int(rng.integers(2, 11))):  # text rows
            candidates[row : row + int(rng.integers(1, 5)), col : col + int(rng.integers(1, 4))] = 1
        index = np.flatnonzero(candidates)
        for min_size in (6, 16):
            expected = reference._structures_sparse(index, (h, w), min_size)
            assert np.array_equal(marks._structures_sparse(index, (h, w), min_size), expected)


def test_components_are_numbered_as_ndimage_labels_them() -> None:
    from scipy import ndimage

    from sswe_node.imaging.kernels import components

    rng = np.random.default_rng(7)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        candidates = rng.random((h, w)) < rng.uniform(0.01, 0.8)
        index = np.flatnonzero(candidates)
        if not len(index):
            continue
        owners, n = components(index, w)
        labels, expected = ndimage.label(candidates, structure=np.ones((3, 3), dtype=bool))
        assert n == expected and np.array_equal(owners, labels.reshape(-1)[index])


def test_byte_rows_finds_the_rows_of_views_and_copies_what_it_must() -> None:
    from sswe_node.imaging.kernels import _rows

    frame = np.arange(7 * 9 * 3, dtype=np.uint8).reshape(7, 9, 3)
    raw = np.frombuffer(frame.tobytes(), dtype=np.uint8).reshape(7, 9, 3)  # read-only
    views = (frame, frame[2:5, 3:8], frame[::2, 1:4], frame[:, ::2], frame[:1, :1], raw[1:6, 2:])
    for pixels in (*views, np.asfortranarray(frame), frame[:0], frame[:, :0]):
        buffer, seen = _byte_rows_checked(pixels)
        assert not buffer.flags.writeable and not seen.flags.writeable
        assert np.array_equal(seen, pixels)
        flat, stride = _rows(buffer, seen)
        h, w = pixels.shape[:2]
        rows = [flat[r * stride : r * stride + 3 * w] for r in range(h)]
        assert np.array_equal(np.stack(rows).reshape(h, w, 3) if h else seen, pixels)
    with pytest.raises(ValueError):
        kernels.byte_rows(frame.astype(np.float32))
    with pytest.raises(ValueError):  # pixels outside the buffer
        _rows(np.zeros(10, dtype=np.uint8), frame)


def _byte_rows_checked(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    buffer, seen = kernels.byte_rows(pixels)
    shares = np.shares_memory(seen, pixels) if pixels.size else True
    contiguous_rows = pixels.strides[1:] == (3, 1) and pixels.strides[0] >= 3 * pixels.shape[1]
    assert shares or not contiguous_rows  # views of frames are not copied
    return buffer, seen


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> list[pydicom.Dataset]:
    """Annotated dual captures (lossless and JPEG), full-screen B-modes and ALOKA's."""
    from training.simulate import write_archive

    found = []
    for jpeg in (False, True):
        root = tmp_path_factory.mktemp("kernels") / f"archive{jpeg:d}"
        write_archive(root, patients=1, seed=31, images_per_patient=3, jpeg=jpeg,
                      annotations=True, scales="random")  # fmt: skip
        found += [pydicom.dcmread(p) for p in sorted(root.rglob("*.dcm"))]
    found.append(pydicom.dcmread(get_testdata_file("gdcm-US-ALOKA-16.dcm")))
    return found


def test_real_captures_give_the_numpy_codes_marks(
    captures: list[pydicom.Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sswe_node.imaging.reader as reader

    duals = 0
    for ds in captures:
        readings = read_instance(ds, scale=(0.0, 300.0), read_labels=False, decode=False)
        frames = decode_frames_native(ds, [r.frame for r in readings])
        for reading, frame in zip(readings, frames, strict=True):
            if reading.overlay_roi is None:
                continue
            duals += 1
            box, plain = frame[reading.overlay_roi.slices], frame[reading.roi.slices]
            for kind in ({"grey_image": False}, {"grey_image": True, "white": False}):
                pixels = box if not kind["grey_image"] else plain
                expected = reference.graphics_marks(pixels, **kind)
                assert np.array_equal(marks.graphics_marks(pixels, **kind), expected)
    assert duals >= 6
    new = [read_instance(ds, scale=(0.0, 300.0), read_labels=False) for ds in captures]
    monkeypatch.setattr(reader, "graphics_marks", reference.graphics_marks)
    monkeypatch.setattr(reader, "wedge_mask", reference.wedge_mask)
    old = [read_instance(ds, scale=(0.0, 300.0), read_labels=False) for ds in captures]
    for ours, theirs in zip(new, old, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert np.array_equal(a.marks, b.marks)
            assert np.array_equal(a.model_input(), b.model_input())
            if a.confidence is not None:
                assert np.array_equal(a.confidence, b.confidence)


def _strip(rng: np.random.Generator) -> np.ndarray:
    """A strip of flat or speckled background, with a ramp, steps and half levels."""
    h, w = int(rng.integers(20, 300)), int(rng.integers(4, 60))
    strip = rng.integers(0, 256, (h, w)).astype(np.float32)
    if rng.random() < 0.5:  # flat background (black, saturated) in blocks: uniform rows
        strip[rng.random((h, w)) < rng.random()] = rng.choice([0.0, 1.5, 255.0])
        strip = np.repeat(strip[:, ::8], 8, axis=1)[:, :w].copy()
    for _ in range(int(rng.integers(0, 3))):  # a wedge: a ramp over 6+ columns
        top = int(rng.integers(0, max(1, h - 24)))
        bottom = int(rng.integers(min(h, top + 20), h + 1))
        c0 = int(rng.integers(0, max(1, w - 6)))
        ramp = np.linspace(rng.uniform(0, 60), rng.uniform(100, 255), bottom - top)
        if rng.random() < 0.3:
            ramp = ramp[::-1]
        ramp = np.round(ramp * 2) / 2 if rng.random() < 0.5 else ramp  # ties to even
        if rng.random() < 0.2:
            ramp[len(ramp) // 2 :] += rng.choice([-60.0, 3.0, 49.0])  # a jump
        strip[top:bottom, c0 : c0 + int(rng.integers(6, 10))] = ramp[:, None].astype(np.float32)
    if rng.random() < 0.1:
        strip[rng.random((h, w)) < 0.01] = np.nan
    return strip


@pytest.mark.parametrize("seed", range(4))
def test_wedge_ramps_are_the_numpy_codes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    found = 0
    for _ in range(150):
        strip = _strip(rng)
        expected = reference._ramp_columns(strip)
        assert marks._ramp_columns(strip) == expected
        assert marks._ramp_columns(strip[:, ::-1]) == reference._ramp_columns(strip[:, ::-1])
        found += expected is not None
    assert found >= 20  # the ramps are found, not only refused


@pytest.mark.parametrize("seed", range(4))
def test_fill_is_the_numpy_codes_to_the_bit(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    # values whose float64 sums round differently in another order (numpy sums pairwise)
    awkward = np.array([2.0**60, -(2.0**60), 1.0, 2.0**-30, 3.0, -0.0, 0.1], dtype=np.float32)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        if rng.random() < 0.5:
            image = rng.random((h, w)).astype(np.float32)
        else:
            image = rng.choice(awkward, (h, w))
        mask = rng.random((h, w)) < rng.choice([0.01, 0.1, 0.5, 0.9])
        if rng.random() < 0.5:  # a block: the larger squares, some box-filtered whole
            top, left = int(rng.integers(0, h)), int(rng.integers(0, w))
            mask[top : top + int(rng.integers(3, 40)), left : left + int(rng.integers(3, 40))] = 1
        ours, theirs = marks.fill_masked(image, mask), reference.fill_masked(image, mask)
        assert ours.dtype == theirs.dtype and np.array_equal(
            ours.view(np.uint32), theirs.view(np.uint32)
        )


def test_pairwise_sums_are_numpys() -> None:
    from sswe_node.imaging.kernels import _pairwise

    rng = np.random.default_rng(12)
    awkward = np.array([2.0**60, -(2.0**60), 1.0, 2.0**-30, 3.0, -0.0, 0.1], dtype=np.float32)
    for n in [*range(1, 300), 481, 961, 1024, 2000, 5000]:
        values = rng.choice(awkward, (4, n))
        expected = values.sum(axis=1, dtype=np.float64)
        for row, total in zip(values.astype(np.float64), expected, strict=True):
            assert (0.0 + _pairwise(row, n)) == total
