"""The fast paths of the mark finder and of the model-input fill give what the plain ones give.

(The compiled kernels against the numpy code they replaced: tests/test_imaging_kernels.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from sswe_node.imaging import marks


def _reference_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each masked pixel: the mean of the unmasked ones in the smallest square holding any."""
    h, w = image.shape
    out = image.astype(np.float64).copy()
    for r, c in zip(*np.nonzero(mask), strict=True):
        for size in (3, 7, 15, 31):
            half = size // 2
            rows = np.clip(np.arange(r - half, r + half + 1), 0, h - 1)  # edge repeated
            cols = np.clip(np.arange(c - half, c + half + 1), 0, w - 1)
            free = ~mask[np.ix_(rows, cols)]
            if free.any():
                out[r, c] = image[np.ix_(rows, cols)][free].mean()
                break
    return out


@pytest.mark.parametrize("seed", range(6))
def test_fill_at_masked_pixels_matches_the_definition_and_the_box_filter(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(8, 100)), int(rng.integers(8, 70))
    image = rng.random((h, w)).astype(np.float32)
    mask = rng.random((h, w)) < 0.05
    mask[rng.integers(0, h), :] = True  # a line, and a block needing the larger squares
    top, left = int(rng.integers(0, h - 6)), int(rng.integers(0, w - 6))
    mask[top : top + 12, left : left + 12] = True
    sparse = marks.fill_masked(image, mask)
    monkeypatch.setattr(marks, "_GATHER_LIMIT", 0)  # every square box-filtered whole
    dense = marks.fill_masked(image, mask)
    reference = _reference_fill(image, mask)
    assert sparse.dtype == np.float32 and np.array_equal(sparse[~mask], image[~mask])
    assert np.abs(sparse - reference).max() < 1e-6
    assert np.abs(dense - reference).max() < 1e-6


def _elastogram_with_white_marks(seed: int, light_share: float, green: int = 150) -> np.ndarray:
    """A colour-table-like box (red and blue never both high) with white strokes and text.

    ``light_share`` of the pixels have red and blue high (and green below ``green``).
    """
    rng = np.random.default_rng(seed)
    h, w = 120, 140
    box = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    box[..., 2] = np.minimum(box[..., 2], 150)
    # light magenta pixels (red and blue high, green not): candidates that are no marks
    k = int(light_share * h * w)
    at = rng.integers(0, h * w, k)
    box.reshape(-1, 3)[at] = np.stack(
        [rng.integers(200, 256, k), rng.integers(0, green, k), rng.integers(200, 256, k)], axis=1
    )
    box[30:32, 10:100] = 255  # a caliper line
    box[60:100, 70] = 250
    for i in range(5):  # small glyphs in a row
        box[105:107, 20 + 6 * i : 22 + 6 * i] = 255
    return box


@pytest.mark.parametrize(
    ("light_share", "green"),
    [(0.0, 150), (0.01, 150), (0.05, 150), (0.1, 150), (0.2, 150), (0.05, 256)],
)
def test_white_marks_in_an_elastogram_same_on_candidates_as_on_the_whole_box(
    light_share: float, green: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # between 1/50 and 1/8 of the box light in red and blue: tested on the candidates alone
    # unless 1/50 are light in all three channels (green 256: the dense path, as before)
    box = _elastogram_with_white_marks(3, light_share, green)
    found = marks.graphics_marks(box, grey_image=False)
    assert (
        found[30, 50] and found[80, 70] and found[106, 21] and found[106, 45]
    )  # line, stroke, glyphs
    monkeypatch.setattr(marks, "_SPARSE_SHARE_WHITE", 10**9)  # always the dense path
    assert np.array_equal(found, marks.graphics_marks(box, grey_image=False))


def test_marks_are_added_to_a_given_mask() -> None:
    box = _elastogram_with_white_marks(4, 0.01)
    alone = marks.graphics_marks(box, grey_image=False)
    given = np.zeros(alone.shape, dtype=bool)
    given[0, 0] = given[-1, -1] = True
    result = marks.graphics_marks(box, grey_image=False, out=given)
    assert result is given
    expected = alone.copy()
    expected[0, 0] = expected[-1, -1] = True
    assert np.array_equal(given, expected)
    with pytest.raises(ValueError, match="contiguous boolean"):
        marks.graphics_marks(box, grey_image=False, out=np.zeros((120, 280), dtype=bool)[:, ::2])
