"""Dense DISAM correspondences: a code and its spatially shifted copy match mutually with the shift; the cell ->
pixel mapping agrees with a hand computation and with the real encoder's receptive field (autograd); an image
and its copy rolled by one cell match end to end with the shift in image pixels; the soft-argmax refinement and
the Grad-SAM filter behave; bad inputs are one-line errors."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from disam_ros.model import preset
from disam_ros.model.networks import build_encoder
from disam_ros.pose.dense import (
    DenseConfig,
    cells_to_pixels,
    dense_matches,
    match_codes,
    mutual_nearest,
    normalise_cells,
    soft_argmax_refine,
    untrained_encoder,
)


def test_shifted_code_matches_mutually_with_the_shift():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(128, 12, 16)).astype(np.float32)
    shifted = rng.normal(size=z.shape).astype(np.float32)  # the part that comes into view: unrelated codes
    shifted[:, 2:, 3:] = z[:, :-2, :-3]  # content moves by +3 columns, +2 rows
    q_xy, m_xy, scores, pairs = match_codes(z, shifted, DenseConfig(refine=False, min_similarity=0.7))
    assert len(pairs) == (12 - 2) * (16 - 3)  # every overlapping cell, nothing else passes the floor
    np.testing.assert_array_equal(m_xy - q_xy, np.tile([3.0, 2.0], (len(pairs), 1)))
    np.testing.assert_allclose(scores, 1.0, atol=1e-5)
    assert np.all(np.diff(scores) <= 0)  # best first
    assert len(match_codes(z, shifted, DenseConfig(refine=False, max_matches=10))[0]) == 10
    # a shift limit of 0.25 grid (4 columns, 3 rows) allows it; 0.1 (1.6 columns, 1.2 rows) forbids every true pair
    assert len(match_codes(z, shifted, DenseConfig(refine=False, min_similarity=0.7, max_offset=0.25))[3]) == 130
    assert len(match_codes(z, shifted, DenseConfig(refine=False, min_similarity=0.7, max_offset=0.1))[3]) == 0


def test_mutual_check_drops_one_sided_matches():
    fq = normalise_cells(torch.tensor([[[1.0, 0.9, 0.0]], [[0.0, 0.1, 1.0]]]))  # (C=2, h=1, w=3)
    fm = normalise_cells(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]))
    pairs, scores, sim = mutual_nearest(fq, fm)
    assert pairs.tolist() == [[0, 0], [2, 1]]  # query cell 1 prefers map cell 0, which prefers query cell 0
    assert sim.shape == (3, 2) and scores == pytest.approx([1.0, 1.0])


def test_cell_to_pixel_mapping_by_hand():
    # model input 64x64, grid 16x16 (stride 4), image 320x240: x scale 5, y scale 3.75
    px = cells_to_pixels(np.array([[0.0, 0.0], [15.0, 15.0], [7.5, 2.0]]), (16, 16), 64, (320, 240))
    np.testing.assert_allclose(px, [[0.5 * 5 - 0.5, 0.5 * 3.75 - 0.5],
                                    [(60 + 0.5) * 5 - 0.5, (60 + 0.5) * 3.75 - 0.5],
                                    [(30 + 0.5) * 5 - 0.5, (8 + 0.5) * 3.75 - 0.5]])
    # an image the model's own size maps cell j to pixel 4 j
    np.testing.assert_allclose(cells_to_pixels(np.array([[3.0, 5.0]]), (16, 16), 64, (64, 64)), [[12.0, 20.0]])
    with pytest.raises(ValueError, match="does not divide"):
        cells_to_pixels(np.zeros((1, 2)), (15, 15), 64, (64, 64))


def test_cell_centre_is_the_encoders_receptive_field_centre(one_thread):
    """Batch norm in eval mode is a per-channel affine map, so a cell's input gradient is confined to its
    receptive field; the field is symmetric about model pixel stride * j (RECEPTIVE_OFFSET = 0)."""
    cfg = dataclasses.replace(preset("micro", ("a",)), image_size=64, norm="batch")
    torch.manual_seed(0)
    enc = build_encoder(cfg).eval()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    z = enc(x)
    assert z.shape[-2:] == (16, 16)
    r, c = 7, 9
    z[0, :, r, c].sum().backward()
    rows, cols = np.nonzero(x.grad[0].abs().sum(0).numpy() > 0)
    centre = np.array([(cols.min() + cols.max()) / 2, (rows.min() + rows.max()) / 2])
    np.testing.assert_allclose(centre, [4 * c, 4 * r])
    np.testing.assert_allclose(cells_to_pixels(np.array([[c, r]], float), (16, 16), 64, (64, 64))[0], centre)


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 1.5)
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def test_image_rolled_by_one_cell_matches_with_the_shift_in_image_pixels(one_thread):
    """128x96 image, model input 64 (x scale 2, y scale 1.5), stride 4: one cell is 8 x 6 image pixels."""
    cfg = dataclasses.replace(preset("micro", ("sunny", "night")), image_size=64)
    enc = untrained_encoder(cfg, seed=0)
    img = texture(96, 128)
    rolled = np.roll(img, shift=(6, 8), axis=(0, 1))  # content moves by +8 px in x, +6 px in y
    m = dense_matches(enc, img, "night", rolled, "sunny", DenseConfig(refine=False))
    assert m.cell_px == (8.0, 6.0) and m.query_px.shape == m.map_px.shape == (len(m), 2)
    interior = np.all((m.query_px > [40, 30]) & (m.query_px < [80, 60]), axis=1)  # cells far from the borders
    assert interior.sum() >= 20
    np.testing.assert_allclose((m.map_px - m.query_px)[interior], np.tile([8.0, 6.0], (interior.sum(), 1)))
    refined = dense_matches(enc, img, "night", rolled, "sunny", DenseConfig(refine=True, temperature=0.05))
    assert np.all(np.abs(refined.map_px - m.map_px) <= np.array(m.cell_px) + 1e-9)  # within one cell


def test_soft_argmax_stays_on_a_symmetric_peak_and_leans_to_the_stronger_neighbour():
    sim = torch.full((1, 25), -1.0)
    sim[0, 12] = 1.0  # peak at row 2, col 2 of a 5x5 grid
    sim[0, [11, 13]] = 0.5  # equal left and right neighbours
    xy = soft_argmax_refine(sim, np.array([[0, 12]]), (5, 5), temperature=0.1)
    np.testing.assert_allclose(xy, [[2.0, 2.0]], atol=1e-12)
    sim[0, 13] = 0.9
    xy = soft_argmax_refine(sim, np.array([[0, 12]]), (5, 5), temperature=0.1)
    assert 2.2 < xy[0, 0] < 2.5 and xy[0, 1] == pytest.approx(2.0)
    corner = soft_argmax_refine(torch.zeros((1, 25)), np.array([[0, 0]]), (5, 5), temperature=0.1)
    np.testing.assert_allclose(corner, [[0.5, 0.5]])  # off-grid cells get no weight: only 2x2 are averaged
    assert soft_argmax_refine(sim, np.zeros((0, 2), np.int64), (5, 5), 0.1).shape == (0, 2)


def test_gradsam_filter_keeps_the_requested_fraction():
    rng = np.random.default_rng(3)
    z = torch.as_tensor(rng.normal(size=(16, 8, 8)).astype(np.float32)).abs()
    all_ = match_codes(z, z, DenseConfig(refine=False))
    half = match_codes(z, z, DenseConfig(refine=False, gradsam_keep=0.5))
    assert len(all_[3]) == 64 and len(half[3]) == 32
    assert {tuple(p) for p in half[3]} <= {tuple(p) for p in all_[3]}


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match=r"\(C,h,w\)"):
        match_codes(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="codes of one model"):
        match_codes(np.ones((4, 4, 4)), np.ones((4, 5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        match_codes(np.full((2, 2, 2), np.nan), np.ones((2, 2, 2)))
    for bad in (dict(temperature=0.0), dict(gradsam_keep=0.0), dict(min_similarity=1.5), dict(max_matches=-1)):
        with pytest.raises(ValueError, match="DenseConfig"):
            DenseConfig(**bad)


def test_guided_match_takes_the_candidate_where_the_pose_puts_it():
    """Query keypoint 0's globally nearest descriptor is map keypoint 1, 100 px from where the rough pose
    predicts it; within the radius only map keypoint 0 is a candidate, so the guided match is (0, 0)."""
    from disam_ros.pose.guided import guided_match

    def unit(*v):
        a = np.array(v, np.float64)
        return a / np.linalg.norm(a)

    q_uv = np.array([[50.0, 50.0], [200.0, 80.0]])
    q_desc = np.stack([unit(1, 0.2, 0), unit(0, 0, 1)])
    m_desc = np.stack([unit(1, 0.6, 0), unit(1, 0.2, 0.01), unit(0, 0.1, 1)])
    predicted = np.array([[55.0, 52.0], [150.0, 50.0], [np.inf, np.inf]])  # map 2: behind the camera
    pairs = guided_match(q_uv, q_desc, m_desc, predicted, radius=20.0, ratio=0.9)
    assert pairs.tolist() == [[0, 0]]
    assert guided_match(q_uv, q_desc, m_desc, predicted, radius=1.0, ratio=0.9).shape == (0, 2)


@pytest.mark.parametrize("path", ["cells", "sparse"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_guided_match_equals_its_definition_by_loops(seed, path, monkeypatch):
    """Random keypoints and RootSIFT-like unit descriptors, some map points predicted nowhere (inf) or far off the
    image: the matrix implementation must give exactly the pairs the definition gives, worked out by loops, cell
    by cell and pair by pair (the path narrow radii take) alike."""
    from disam_ros.pose import guided
    from disam_ros.pose.guided import guided_match

    monkeypatch.setattr(guided, "SPARSE_BELOW_PX", 0.0 if path == "cells" else 1e9)

    rng = np.random.default_rng(seed)
    n, m, radius, ratio = 60, 80, 40.0, 0.9
    q_uv = rng.uniform(0, 320, (n, 2))
    pred = rng.uniform(-50, 370, (m, 2))
    pred[rng.choice(m, 8, replace=False)] = np.inf
    pred[:3] = [[5000.0, 10.0], [-900.0, -900.0], [160.0, 9000.0]]  # far outside: nobody's candidate
    base = rng.normal(size=(20, 16))  # shared structure, so near-duplicates and ratio-test failures occur
    def descs(k):
        d = base[rng.integers(0, 20, k)] + 0.35 * rng.normal(size=(k, 16))
        return d / np.linalg.norm(d, axis=1, keepdims=True)
    q_desc, m_desc = descs(n), descs(m)

    def near(i, j):
        return bool(np.all(np.isfinite(pred[j]))) and float(np.linalg.norm(q_uv[i] - pred[j])) <= radius

    want = []
    for i in range(n):
        cand = [j for j in range(m) if near(i, j)]
        if not cand:
            continue
        d = sorted((float(np.linalg.norm(q_desc[i] - m_desc[j])), j) for j in cand)
        (d1, j), d2 = d[0], (d[1][0] if len(d) > 1 else np.inf)
        if not d1 < ratio * d2:
            continue
        rivals = [k for k in range(n) if near(k, j)]
        if min(rivals, key=lambda k: float(np.linalg.norm(q_desc[k] - m_desc[j]))) == i:
            want.append([i, j])
    got = guided_match(q_uv, q_desc, m_desc, pred, radius, ratio)
    assert len(want) >= 5, len(want)  # the case is not trivial
    assert got.tolist() == want


@pytest.mark.parametrize("path", ["cells", "sparse"])
@pytest.mark.parametrize("seed", [0, 1])
def test_guided_match_breaks_exact_ties_as_its_definition(seed, path, monkeypatch):
    """Descriptors drawn from one-hot and (+-1/2, +-1/2, +-1/2, +-1/2) unit vectors: every similarity is exact in
    float32 whatever the summation order, so many exact ties occur (ratio just over 1 lets them through the ratio
    test). The cell-by-cell matcher must resolve them as one argmax over all pairs would, lowest index first,
    which is what the loop below does (sorted() and min() keep the first of equals). Both paths."""
    from disam_ros.pose import guided
    from disam_ros.pose.guided import guided_match

    monkeypatch.setattr(guided, "SPARSE_BELOW_PX", 0.0 if path == "cells" else 1e9)

    rng = np.random.default_rng(seed)
    palette = np.concatenate([np.eye(4), 0.5 * np.array(np.meshgrid(*[[-1, 1]] * 4)).reshape(4, -1).T])
    n, m, radius, ratio = 120, 150, 30.0, 1.0001
    q_uv, pred = rng.uniform(0, 200, (n, 2)), rng.uniform(-20, 220, (m, 2))  # ~7 x 7 cells of one radius
    q_desc, m_desc = palette[rng.integers(0, len(palette), n)], palette[rng.integers(0, len(palette), m)]

    def near(i, j):
        return float(np.linalg.norm(q_uv[i] - pred[j])) <= radius

    def dist(i, j):
        return float(np.sqrt(max(2.0 - 2.0 * q_desc[i] @ m_desc[j], 0.0)))

    want = []
    for i in range(n):
        d = sorted((dist(i, j), j) for j in range(m) if near(i, j))
        if not d or not d[0][0] < ratio * (d[1][0] if len(d) > 1 else np.inf):
            continue
        j = d[0][1]
        if min((k for k in range(n) if near(k, j)), key=lambda k: dist(k, j)) == i:
            want.append([i, j])
    got = guided_match(q_uv, q_desc, m_desc, pred, radius, ratio)
    assert len(want) >= 5, len(want)
    assert got.tolist() == want


def test_guided_match_paths_agree_at_a_polish_size(monkeypatch):
    """A polish's size (2,000 query keypoints, 1,800 map points, 20 px: ~15,000 pairs, so the pair-by-pair path's
    similarities run over many chunks and its maxima scatter into shared rows and columns): both paths give the
    same pairs, which the small cases above tie to the definition."""
    from disam_ros.pose import guided
    from disam_ros.pose.guided import guided_match

    rng = np.random.default_rng(5)
    q_uv = rng.uniform([0, 0], [640, 480], (2000, 2))
    pred = np.vstack([q_uv[rng.permutation(2000)[:1500]] + rng.normal(0, 3, (1500, 2)),
                      rng.uniform([0, 0], [640, 480], (300, 2))])
    pred[rng.choice(len(pred), 40, replace=False)] = np.inf
    base = rng.normal(size=(50, 32))

    def descs(k):
        d = base[rng.integers(0, 50, k)] + 0.8 * rng.normal(size=(k, 32))
        return d / np.linalg.norm(d, axis=1, keepdims=True)
    q_desc, m_desc = descs(2000), descs(1800)
    got = {}
    for path, below in (("cells", 0.0), ("sparse", 1e9)):
        monkeypatch.setattr(guided, "SPARSE_BELOW_PX", below)
        got[path] = guided_match(q_uv, q_desc, m_desc, pred, 20.0, 0.9)
    assert len(got["sparse"]) > 100
    np.testing.assert_array_equal(got["sparse"], got["cells"])


def test_match_eval_runs_end_to_end_on_a_tiny_world(tmp_path, capsys):
    """SIFT, guided and cascaded methods on a 2-frame world; the dense path is left to the unit tests above
    because the first checkpoint read in a process costs over a second (torch's meta-device imports)."""
    from disam_ros.pose.match_eval import main

    out = tmp_path / "r.json"
    argv = ["--world", str(tmp_path / "w"), "--size", "80x60", "--frames", "2", "--conditions", "night",
            "--out", str(out), "--methods", "sift,prior>sift|sift"]
    assert main(argv) == 0
    import json

    got = json.loads(out.read_text())
    assert set(got["results"]) == {"sift", "prior>sift|sift"} and got["settings"]["conditions"] == ["night"]
    s = got["results"]["sift"]["night"]
    assert s["queries"] >= 1 and 0.0 <= s["within_5.0m_10deg"] <= s["solved"] <= 1.0
    rec = got["records"]["prior>sift|sift"]["night"][0]
    assert {"matches", "with_depth", "gt_right", "ms", "solved", "stage"} <= set(rec)
    assert "| prior>sift or sift | night |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--methods", "fine@63"])
    assert exc.value.code == 2


def test_load_encoder_runs_a_checkpoint_at_another_input_size(tmp_path, one_thread):
    from disam_ros.model import DisamNet, Encoder, save_checkpoint
    from disam_ros.pose.dense import load_encoder

    cfg = dataclasses.replace(preset("micro", ("sunny", "night")), image_size=32)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "micro.pt", DisamNet(cfg), cfg, parts=("encoders",))
    img = texture(48, 64)
    same = load_encoder(ckpt)
    assert torch.equal(same.encode(img, "night"), Encoder.from_checkpoint(ckpt, device="cpu").encode(img, "night"))
    big = load_encoder(ckpt, image_size=64)
    assert big.config.image_size == 64 and big.encode(img, "night").shape[-2:] == (16, 16)  # a finer grid
    shared = untrained_encoder(cfg, seed=1)
    assert torch.equal(shared.encode(img, "sunny"), shared.encode(img, "night"))  # one random CNN for all domains
