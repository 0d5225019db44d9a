"""The supervised losses on the RETRIEVAL DESCRIPTORS (eq. 16 coarse vector, flattened fine vector), by hand.

Codes here are tiny (C = 2 channels of 1 x 2 maps) so every descriptor, distance and loss value is computed
on paper: a channel map [a, b] normalises to [a, b] / sqrt(a^2 + b^2), and the coarse vector is the two
normalised maps side by side over sqrt(2).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from disam_ros.maps.descriptors import coarse_vectors, fine_vectors
from disam_ros.model.related_losses import coarse_descriptor, fine_descriptor, retrieval_descriptor
from disam_ros.training.mining import hardest_other_places, table_from_plain, table_to_plain
from disam_ros.training.recipe import SupervisedSection
from disam_ros.training.supervised import in_batch_term, supervised_term


def _code(ch0: list[float], ch1: list[float]) -> torch.Tensor:
    """(C=2, h=1, w=2) code from its two channel maps."""
    return torch.tensor([[ch0], [ch1]], dtype=torch.float64)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# anchor: channel 0 looks left, channel 1 right. positive: channel 0 agrees, channel 1 flipped.
# candidate 0: the anchor scaled per channel (eq. 16 ignores scale); candidate 1: both channels flipped.
ANCHOR = _code([1.0, 0.0], [0.0, 1.0])
POSITIVE = _code([2.0, 0.0], [1.0, 0.0])
CANDS = torch.stack([_code([3.0, 0.0], [0.0, 5.0]), _code([0.0, 1.0], [1.0, 0.0])])
# eq. 16 with the anchor: positive (1 + 0) / 2 = 0.5, candidate 0 (1 + 1) / 2 = 1, candidate 1 (0 + 0) / 2 = 0,
# and |u - v| = sqrt(2 - 2 * eq16) for the unit-norm coarse vectors; the losses floor a distance at 1e-6 (sqrt of
# their 1e-12 clamp) so that its gradient stays finite, hence candidate 0's 1e-6 instead of 0
D_POS, D_C0, D_C1 = 1.0, 1e-6, math.sqrt(2.0)


def test_coarse_descriptor_is_the_maps_coarse_vector_and_its_dot_product_is_eq16():
    assert coarse_descriptor(ANCHOR[None])[0].tolist() == pytest.approx([1 / math.sqrt(2), 0, 0, 1 / math.sqrt(2)])
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 4, 3, 3, generator=g)
    z[1, 2] = 0.0  # a dead channel contributes 0, as in retrieval
    torch.testing.assert_close(coarse_descriptor(z), coarse_vectors(z))
    torch.testing.assert_close(fine_descriptor(z), fine_vectors(z))
    torch.testing.assert_close(retrieval_descriptor(z, "fine"), fine_vectors(z))
    loop = torch.tensor([[np.mean([torch.nn.functional.cosine_similarity(a[k].flatten(), b[k].flatten(), dim=0).item()
                                   for k in range(4)]) for b in z[2:]] for a in z[2:]])
    torch.testing.assert_close(coarse_descriptor(z[2:]) @ coarse_descriptor(z[2:]).T, loop.float(), atol=1e-6,
                               rtol=0)
    with pytest.raises(ValueError, match="unknown descriptor 'pooled'"):
        retrieval_descriptor(z, "pooled")


def test_soft_contrastive_on_the_coarse_descriptor_matches_the_hand_value():
    cfg = SupervisedSection(kind="soft_contrastive", descriptor="coarse", tau=3.0, gamma=2.0, eta=2.0, nu=3.0, mu=1.0)
    geo = [0.0, 1.0, 10.0]  # positive, candidate 0, candidate 1: geometric distance from the anchor's place
    d = [D_POS, D_C0, D_C1]
    gp = [_sig(2.0 * (3.0 - y)) for y in geo]
    gn = [_sig(2.0 * (y - 3.0)) for y in geo]
    expected = (math.log(1 + sum(math.exp(2.0 * g * di - 1.0) for g, di in zip(gp, d))) / 2.0
                + math.log(1 + sum(math.exp(1.0 - 3.0 * g * di) for g, di in zip(gn, d))) / 3.0)
    got = supervised_term(cfg, ANCHOR[None], POSITIVE[None], CANDS[None], torch.tensor([geo[0]], dtype=torch.float64),
                          torch.tensor([geo[1:]], dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-9)


def _soft_by_hand(geo: list[float], d: list[float], tau=3.0, gamma=2.0, eta=2.0, nu=3.0, mu=1.0) -> float:
    """Eq. 5 for one anchor from its candidates' geometric and descriptor distances, written out."""
    gp = [_sig(gamma * (tau - y)) for y in geo]
    gn = [_sig(gamma * (y - tau)) for y in geo]
    return (math.log(1 + sum(math.exp(eta * g * di - mu) for g, di in zip(gp, d))) / eta
            + math.log(1 + sum(math.exp(mu - nu * g * di) for g, di in zip(gn, d))) / nu)


def test_in_batch_soft_contrastive_scores_every_image_against_the_other_conditions_batch():
    # two places, 10 apart: condition i sees ANCHOR at 0 and CANDS[0] (same eq. 16 vector as ANCHOR) at 10;
    # condition j sees POSITIVE at 0 and CANDS[1] at 10. Descriptor distances (header): ANCHOR/CANDS[0] to
    # POSITIVE 1, to CANDS[1] sqrt 2.
    cfg = SupervisedSection(kind="soft_contrastive", descriptor="coarse", tau=3.0, gamma=2.0, eta=2.0, nu=3.0, mu=1.0)
    codes_i = torch.stack([ANCHOR, CANDS[0]])
    codes_j = torch.stack([POSITIVE, CANDS[1]])
    xy = torch.tensor([[0.0], [10.0]], dtype=torch.float64)
    r2 = math.sqrt(2.0)
    i_to_j = (_soft_by_hand([0, 10], [1, r2]) + _soft_by_hand([10, 0], [1, r2])) / 2
    j_to_i = (_soft_by_hand([0, 10], [1, 1]) + _soft_by_hand([10, 0], [r2, r2])) / 2
    got = in_batch_term(cfg, codes_i, codes_j, xy, xy)
    assert got.item() == pytest.approx((i_to_j + j_to_i) / 2, rel=1e-9)
    # places given by 2-D coordinates: only the Euclidean distance between them matters
    xy2 = torch.tensor([[0.0, 0.0], [6.0, 8.0]], dtype=torch.float64)
    assert in_batch_term(cfg, codes_i, codes_j, xy2, xy2).item() == pytest.approx(got.item(), rel=1e-9)


def test_geo_local_triplet_on_the_coarse_descriptor_matches_the_hand_value():
    cfg = SupervisedSection(kind="geo_local", descriptor="coarse", prior_radius=5.0, alpha=3.0, global_weight=0.0)
    cand_geo = torch.tensor([[4.0, 50.0]], dtype=torch.float64)  # only candidate 0 lies inside the prior radius
    got = supervised_term(cfg, ANCHOR[None], POSITIVE[None], CANDS[None], torch.zeros(1, dtype=torch.float64),
                          cand_geo)
    assert got.item() == pytest.approx(math.log1p(math.exp(3.0 * (D_POS - D_C0))), rel=1e-9)
    cfg_all = SupervisedSection(kind="geo_local", descriptor="coarse", prior_radius=5.0, alpha=3.0, global_weight=1.0)
    got_all = supervised_term(cfg_all, ANCHOR[None], POSITIVE[None], CANDS[None], torch.zeros(1, dtype=torch.float64),
                              cand_geo)
    expected_all = (math.log1p(math.exp(3.0 * (D_POS - D_C0))) + math.log1p(math.exp(3.0 * (D_POS - D_C1)))) / 2
    assert got_all.item() == pytest.approx(expected_all, rel=1e-9)


def test_fine_descriptor_distance_is_that_of_the_flattened_unit_code():
    # fine vectors: anchor [1,0,0,1]/sqrt2, positive [2,0,1,0]/sqrt5, candidate 0 [3,0,0,5]/sqrt34
    cos_pos = 2 / math.sqrt(2 * 5)
    cos_c0 = (3 + 5) / math.sqrt(2 * 34)
    d_pos, d_c0 = math.sqrt(2 - 2 * cos_pos), math.sqrt(2 - 2 * cos_c0)
    cfg = SupervisedSection(kind="geo_local", descriptor="fine", prior_radius=5.0, alpha=3.0, global_weight=0.0)
    got = supervised_term(cfg, ANCHOR[None], POSITIVE[None], CANDS[None], torch.zeros(1, dtype=torch.float64),
                          torch.tensor([[4.0, 50.0]], dtype=torch.float64))
    assert got.item() == pytest.approx(math.log1p(math.exp(3.0 * (d_pos - d_c0))), rel=1e-9)


def test_the_descriptor_loss_sees_what_a_spatial_average_cannot():
    # candidate 1 shows the anchor's channels swapped left/right: the spatial means are identical (distance 0 after
    # average pooling), but retrieval's eq. 16 scores it 0: the descriptor-level triplet must push it away
    cand = CANDS[1:2]
    assert torch.equal(cand[0].mean((1, 2)), ANCHOR.mean((1, 2)))
    cfg = SupervisedSection(kind="geo_local", descriptor="coarse", prior_radius=5.0, alpha=3.0)
    hard = supervised_term(cfg, ANCHOR[None], ANCHOR[None], cand[None], torch.zeros(1, dtype=torch.float64),
                           torch.ones(1, 1, dtype=torch.float64))
    assert hard.item() == pytest.approx(math.log1p(math.exp(3.0 * (1e-6 - D_C1))), rel=1e-9)  # d_pos floored
    easy = supervised_term(cfg, ANCHOR[None], ANCHOR[None], ANCHOR[None, None], torch.zeros(1, dtype=torch.float64),
                           torch.ones(1, 1, dtype=torch.float64))
    assert easy.item() == pytest.approx(math.log(2.0), rel=1e-9)  # d_pos = d_neg = 0: softplus(0)


def test_hard_negative_mining_keeps_the_most_similar_other_places():
    sim = torch.tensor([[0.9, 0.8, 0.1, 0.7, 0.3],
                        [0.2, 0.95, 0.9, 0.1, 0.85]])
    pos_a = np.array([[0.0, 0, 0], [3.0, 0, 0]])
    pos_b = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [4.0, 0, 0]])
    # row 0 (place 0): places within 1.5 (columns 0, 1) are the same place; the rest by similarity: 3, 4, 2
    # row 1 (place 3): columns 2, 3, 4 are within 1.5; the rest: 1, 0, then nothing (-1)
    got = hardest_other_places(sim, pos_a, pos_b, min_dist=1.5, m=4)
    assert got.tolist() == [[3, 4, 2, -1], [1, 0, -1, -1]]
    assert hardest_other_places(sim, pos_a, pos_b, min_dist=1.5, m=7).shape == (2, 7)  # m > columns: padded
    back = table_from_plain(table_to_plain({(0, 1): got}))
    assert list(back) == [(0, 1)] and back[(0, 1)].tolist() == got.tolist()
