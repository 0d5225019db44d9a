"""Dense gradient-histogram descriptors (pose/gradients.py) against hand-worked values: orientation binning of
linear ramps, the descriptor of a ramp (Gaussian cell weights, SIFT's clip and renormalisation worked by hand),
the grid read by slicing equal to point-wise reads, a known translation found by the search, the runner-up kept
apart, a sub-pixel shift recovered by `refine`, and the uint8 storage round trip."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from disam_ros.pose import gradients as gr


def _ramp(a: float, b: float, size: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return 100.0 + a * x + b * y


@pytest.mark.parametrize("a, b, bins", [
    (3.0, 0.0, {0: 1.0}),  # gradient along +x: angle 0, bin 0
    (0.0, 3.0, {2: 1.0}),  # along +y (image rows): 90 deg, bin 2
    (-3.0, 0.0, {4: 1.0}),  # 180 deg, bin 4
    (3.0 * math.cos(math.radians(22.5)), 3.0 * math.sin(math.radians(22.5)), {0: 0.5, 1: 0.5}),  # between 0 and 1
])
def test_a_ramps_gradient_lands_in_its_orientation_bins(a, b, bins):
    # central differences (Sobel, ksize 1) of a ramp: 2a and 2b, magnitude 2 * 3 = 6, split linearly in angle
    ch = gr.orientation_channels(_ramp(a, b), cell=4)
    centre = ch[:, 48, 48]
    want = np.zeros(8)
    for k, share in bins.items():
        want[k] = 6.0 * share
    np.testing.assert_allclose(centre, want, atol=1e-3)


def test_the_descriptor_of_a_ramp_by_hand():
    # cell 8: cell centres at -12, -4, 4, 12 px, Gaussian sigma 16 px: weights exp(-r^2 / 512) = 0.9394 (4 inner
    # cells), 0.7316 (8 edge cells), 0.5698 (4 corners); unit length: 0.3112, 0.2424, 0.1888; clipped at 0.2:
    # 0.2, 0.2, 0.1888; unit length again: 0.2535 (inner, edge), 0.2393 (corners), all in bin 0
    ch = gr.orientation_channels(_ramp(2.0, 0.0), cell=8)
    d = gr.describe(ch, np.array([[48.0, 48.0]]), cell=8)[0].reshape(16, 8)
    assert np.abs(d[:, 1:]).max() < 1e-6
    corners = [0, 3, 12, 15]
    np.testing.assert_allclose(d[corners, 0], 0.2393, atol=2e-3)
    np.testing.assert_allclose(np.delete(d[:, 0], corners), 0.2535, atol=2e-3)


def _texture(seed: int = 0, h: int = 120, w: int = 160) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def test_the_sliced_grid_equals_point_wise_descriptors():
    ch = gr.orientation_channels(_texture(), cell=6)
    grid = gr.describe_grid(ch, cell=6, stride=3)
    assert grid.positions[0, 0].tolist() == [9.0, 9.0]  # reach 1.5 cells
    each = gr.describe(ch, grid.positions.reshape(-1, 2), cell=6).reshape(grid.descriptors.shape)
    np.testing.assert_allclose(grid.descriptors, each, atol=1e-6)
    with pytest.raises(ValueError, match="even cell"):
        gr.describe_grid(ch, cell=5, stride=3)


def _bilinear_by_hand(ch: np.ndarray, x: float, y: float) -> np.ndarray:
    """The channels at (x, y), clipped to the image, bilinear between the four pixels around it, one by one."""
    _, h, w = ch.shape
    x, y = min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)
    x0, y0 = min(int(math.floor(x)), w - 2), min(int(math.floor(y)), h - 2)
    fx, fy = x - x0, y - y0
    return ((1 - fx) * (1 - fy) * ch[:, y0, x0] + fx * (1 - fy) * ch[:, y0, x0 + 1]
            + (1 - fx) * fy * ch[:, y0 + 1, x0] + fx * fy * ch[:, y0 + 1, x0 + 1])


@pytest.mark.parametrize("shift", [0.0, 0.25])
def test_descriptors_read_the_channels_as_bilinear_reads_by_hand(shift):
    """Whole-pixel positions (what `refine` asks for) take a cheaper read than fractional ones; both equal the
    channels read by hand, also where cells leave the image (clipped to its border, last row and column)."""
    ch = gr.orientation_channels(_texture(), cell=6)
    _, h, w = ch.shape
    xy = np.array([[40.0, 50.0], [0.0, 0.0], [w - 1.0, h - 1.0], [w + 3.0, 7.0], [5.0, -4.0], [77.0, 31.0]]) + shift
    got = gr.describe(ch, xy, cell=6)
    ox, oy, weight = gr._cell_offsets(6)
    for (x, y), d in zip(xy, got):
        raw = np.stack([_bilinear_by_hand(ch, x + dx, y + dy) * wt for dx, dy, wt in zip(ox, oy, weight)])
        np.testing.assert_allclose(d, gr.normalise(raw.reshape(-1)), atol=1e-6)


def test_the_search_finds_a_known_translation():
    # B is A moved 6 px right and 4 px up; each point of A is looked for near where it was (a zero guide)
    a = _texture(1)
    b = np.full_like(a, 128)
    b[:-4 or None, 6:] = a[4:, :-6]
    cell = 6
    pts = np.array([[x, y] for y in range(30, 90, 10) for x in range(30, 130, 10)], np.float64)
    md = gr.describe(gr.orientation_channels(a, cell), pts, cell)
    grid = gr.describe_grid(gr.orientation_channels(b, cell), cell, stride=1)
    pos, best, second = gr.search(md, pts, grid, radius=12.0)
    hit = np.all(np.abs(pos - (pts + [6.0, -4.0])) < 0.5, axis=1)
    assert hit.mean() > 0.95 and np.all(best >= second)
    far = gr.search(md, pts + 200.0, grid, radius=12.0)  # predicted off the image: nothing near
    assert np.isnan(far[0]).all() and np.isneginf(far[1]).all()


def test_the_runner_up_is_taken_at_least_two_steps_away():
    # a 5 x 5 grid of unit vectors: the best match in the centre, a near-copy next to it (1 step: ignored) and a
    # weaker one two steps away, which is the runner-up
    desc = np.zeros((5, 5, 128), np.float32)
    desc[..., 0] = 1.0
    target = np.zeros(128, np.float32)
    target[1] = 1.0
    desc[2, 2] = target
    desc[2, 3] = np.r_[0.1, 0.995, np.zeros(126)]
    desc[0, 2] = np.r_[0.6, 0.8, np.zeros(126)]
    pos = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).astype(np.float32)
    grid = gr.DescriptorGrid(pos, desc, 1)
    p, best, second = gr.search(target[None], np.array([[2.0, 2.0]]), grid, radius=3.0)
    assert p[0].tolist() == [2.0, 2.0] and best[0] == pytest.approx(1.0) and second[0] == pytest.approx(0.8)


@pytest.mark.parametrize("chunk", [1 << 22, 50])
def test_the_search_equals_its_definition_window_by_window(chunk, monkeypatch):
    """Random grid and predictions (some off the image, not finite, or with clipped windows), descriptors from a
    small palette so that exact ties occur: best, position and runner-up as a loop over each map point's own window
    gives them (first maximum in row-major order; runner-up at least `apart` cells away). `chunk` 50 scores the
    windows a few at a time, as a large radius does."""
    monkeypatch.setattr(gr, "WINDOW_FLOATS", chunk)
    rng = np.random.default_rng(4)
    ny, nx, stride = 9, 12, 4
    palette = np.eye(8, dtype=np.float32)
    desc = palette[rng.integers(0, 8, (ny, nx))]
    pos = np.stack(np.meshgrid(np.arange(nx) * stride + 6.0, np.arange(ny) * stride + 6.0), -1).astype(np.float32)
    grid = gr.DescriptorGrid(pos, desc, stride)
    md = palette[rng.integers(0, 8, 40)]
    pred = rng.uniform(-10, 60, (40, 2))
    pred[:3] = [[np.nan, 5.0], [500.0, 500.0], [-40.0, 20.0]]
    for radius, apart in ((5.0, 2), (9.0, 1), (14.0, 3)):
        got = gr.search(md, pred, grid, radius, apart)
        for i in range(len(md)):
            cells = [(r, c) for r in range(ny) for c in range(nx)
                     if np.all(np.isfinite(pred[i])) and np.all(np.abs(pos[r, c] - pred[i]) <= radius)]
            if not cells:
                assert np.isnan(got[0][i]).all() and got[1][i] == -np.inf and got[2][i] == -np.inf
                continue
            sims = [float(desc[r, c] @ md[i]) for r, c in cells]
            r, c = cells[int(np.argmax(sims))]
            rest = [s for (rr, cc), s in zip(cells, sims) if abs(rr - r) >= apart or abs(cc - c) >= apart]
            assert got[0][i].tolist() == pos[r, c].tolist() and got[1][i] == max(sims)
            assert got[2][i] == (max(rest) if rest else -np.inf)


def test_refine_recovers_a_sub_pixel_shift():
    a = _texture(2)
    shift = np.array([0.4, -0.3])
    m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    b = cv2.warpAffine(a.astype(np.float32), m, (a.shape[1], a.shape[0]), flags=cv2.INTER_CUBIC)
    cell = 6
    pts = np.array([[x, y] for y in range(30, 90, 8) for x in range(30, 130, 8)], np.float64)
    md = gr.describe(gr.orientation_channels(a, cell), pts, cell)
    got = gr.refine(gr.orientation_channels(b, cell), md, pts, cell, reach=2)
    err = np.linalg.norm(got - (pts + shift), axis=1)
    assert np.median(err) < 0.15  # the integer position alone is 0.5 px off


def test_u8_storage_round_trip_and_cell_scaling():
    d = gr.describe(gr.orientation_channels(_texture(3), 8), np.array([[60.0, 50.0], [80.0, 70.0]]), 8)
    np.testing.assert_allclose(gr.from_u8(gr.to_u8(d)), d, atol=3e-3)
    assert (gr.cell_pixels(8, 640), gr.cell_pixels(8, 320), gr.cell_pixels(8, 1600), gr.cell_pixels(8, 100)) == \
        (8, 4, 20, 2)
    with pytest.raises(ValueError, match="at least 3x3"):
        gr.orientation_channels(np.zeros((2, 5)), 8)
