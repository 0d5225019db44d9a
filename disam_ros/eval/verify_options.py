"""disam-eval's verification options, one table: each row names the flag, the VerifyConfig field it sets (whose
default is the option's), its type and help; `tracker_args.add_tracker_args` adds them and `tracker_config` passes
them on, so a new verifier knob is one row here (test_eval_verify checks each reaches the config)."""
from __future__ import annotations

import argparse

from disam_ros.cliutil import (
    distance_band,
    non_negative_float,
    non_negative_int,
    on_off,
    positive_float,
    positive_int,
    probability,
    probability_or_one,
    scale_share,
)
from disam_ros.verify.config import FEATURE_CHOICES


def feature_choice(text: str) -> str:
    """--verify-features: one of FEATURE_CHOICES."""
    if text not in FEATURE_CHOICES:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(FEATURE_CHOICES)}")
    return text


# disam-eval's verification options: flag, VerifyConfig field (its default is the option's), type, help
VERIFY_OPTIONS = (
    ("--track-frames", "track_frames", non_negative_int, "map-point tracking: frames a verified frame's map points "
     "carry on when a frame's own candidates do not verify (0: off)"),
    ("--turn-search", "turn_search_deg", non_negative_float, "when no candidate verifies guided by its own pose, "
     "the best guides again turned this many degrees left and right (0: off)"),
    ("--first-scale", "first_scale", scale_share, "the candidates are first looked at with the query's SIFT at "
     "this share of the map's scale, the full scale only when no look is sure (1: off)"),
    ("--first-min-inliers", "first_min_inliers", positive_int, "... and the first look is the answer only with "
     "this many inliers"),
    ("--first-max-std", "first_max_std_m", positive_float, "... and only when its position 1-sigma is at most this "
     "many metres"),
    ("--first-candidates", "first_candidates", positive_int, "... on this many candidates, up to the first sure one"),
    ("--first-probe-every", "first_probe_every", positive_int, "... after two frames in a row whose looks "
     "verified nothing, look only every this many frames until one verifies (1: every frame)"),
    ("--first-max-trials", "first_max_trials", positive_int, "... the look's RANSAC trials at most"),
    ("--first-max-keypoints", "first_max_keypoints", non_negative_int, "the half-scale features (looks, flow prior) "
     "keep this many strongest keypoints; more are rain or snow clutter (0: the SIFT recipe's cap)"),
    ("--first-polish-half", "first_polish_half", on_off, "... a verified look that is not sure is polished with "
     "its own half-scale features before full-scale SIFT is computed (on/off)"),
    ("--first-polish-half-inliers", "first_polish_half_inliers", non_negative_int, "... and is the answer when "
     "that half-scale pool holds this many inliers (0: the full-scale pool's, 60)"),
    ("--first-polish-near", "first_polish_near", on_off, "keyframes: when no look verified, the one refused only "
     "for its inlier count or ratio is polished as an unsure look is (on/off)"),
    ("--candidate-polish-inliers", "candidate_polish_inliers", non_negative_int, "the first full-scale candidate "
     "that verifies is polished at once and is the answer when the pooled solve holds this many inliers (0: off, "
     "every candidate tried)"),
    ("--polish-images", "polish_images", non_negative_int, "a verified SIFT pose is matched again from itself "
     "against this many map images around it and solved from the pooled matches (0: off)"),
    ("--polish-radius", "polish_radius", positive_float, "... each map point searched within this share of the "
     "image width of where that pose puts it"),
    ("--prior-min-inliers", "prior_min_inliers", non_negative_int, "a frame whose flow chain has no hops left "
     "(a keyframe posed by flow) is matched around its flow pose first, answered when that holds this many "
     "inliers (0: off)"),
    ("--prior-radius", "prior_radius", positive_float, "... each map point searched within this share of the image "
     "width of where the flow pose puts it"),
    ("--regate-far-poses", "regate_far_poses", on_off, "a SIFT pose refused only for lying beyond 10 m / 20 deg "
     "of its guide is judged again at the map images near it, verified when one agrees (on/off)"),
    ("--verify-features", "verify_features", feature_choice, "local features poses are verified with: map (what "
     "the map was built for), sift, learned or both (learned when SIFT verifies nothing)"),
    ("--learned-radius", "learned_radius", positive_float, "learned features: each map keypoint searched within "
     "this share of the image width of where the candidate's pose puts it"),
    ("--learned-ratio", "learned_ratio", probability_or_one, "... and matched when nearer than this x the second "
     "nearest there, and mutual (1: mutual nearest neighbour only)"),
    ("--learned-min-inliers", "learned_min_inliers", positive_int, "... a learned pose verified with this many "
     "inliers"),
    ("--learned-min-inlier-ratio", "learned_min_inlier_ratio", probability, "... that are at least this share of "
     "its matches"),
    ("--learned-agree", "learned_agree_m", non_negative_float, "... a learned pose verified only when another "
     "candidate's learned solve lands within this many metres of it (0: off)"),
    ("--learned-sift-radius", "learned_sift_radius", non_negative_float, "... a verified learned pose guides SIFT "
     "within this share of the image width and is replaced by SIFT's solve when near it (0: off)"),
    ("--unguided-candidates", "unguided_candidates", non_negative_int, "when still none verifies, this many are "
     "matched unguided (0: off)"),
    ("--dense-candidates", "gradient_candidates", non_negative_int, "when still none verifies, this many are "
     "searched densely (map keypoints looked for by gradient descriptors, no query keypoints; 0: off)"),
    ("--dense-single", "gradient_single", on_off, "... in single mode too (on/off; a single frame cannot tell "
     "look-alike places apart: see --dense-rival-m)"),
    ("--dense-with-prior", "gradient_with_prior", on_off, "... and in single mode on frames a spatial prior "
     "gated (on/off; see --prior-sigma-m)"),
    ("--dense-min-inliers", "gradient_min_inliers", positive_int, "... verified with this many inliers"),
    ("--dense-min-inlier-ratio", "gradient_min_inlier_ratio", probability, "... that are at least this share "
     "of its distinct finds"),
    ("--dense-radius", "gradient_radius", positive_float, "... each map point looked for within this share of the "
     "image width of its predicted position"),
    ("--dense-max-points", "gradient_max_points", positive_int, "... the first this many map points in view"),
    ("--dense-max-tilt", "gradient_max_tilt_deg", non_negative_float, "... and refused when its camera is tilted "
     "(pitch, roll) from the candidate's by more than this many degrees (0: off)"),
    ("--dense-rival-m", "gradient_rival_m", distance_band, "... a weak dense pose must out-find every map image "
     "NEAR,FAR metres from its candidate (a place-level ratio test; 0,0: off)"),
    ("--dense-single-rival-m", "gradient_single_rival_m", distance_band, "... the band single mode uses while "
     "--dense-rival-m is off (its search runs on frames a prior gated; 0,0: off)"),
    ("--dense-polish-points", "gradient_polish_points", non_negative_int, "... a verified dense pose searched "
     "again from itself with this many map points in a narrow window (0: off)"),
    ("--dense-first-after", "gradient_first_after", non_negative_int, "... run first after this many frames in a "
     "row that only it verified (0: always last)"),
    ("--skip-sift-after", "gradient_skip_sift_after", non_negative_int, "... and SIFT's steps skipped after this "
     "many frames in a row they verified nothing (0: never)"),
    ("--dense-probe-every", "gradient_first_probe_every", positive_int, "... except every this many such frames"),
    ("--keyframe-dense-clutter", "keyframe_dense_clutter", non_negative_float, "with --keyframes: a keyframe "
     "whose first looks verified nothing from at least this share of SIFT's keypoint cap runs the dense search "
     "instead of the full-scale SIFT steps (> 1: off)"),
    ("--keyframe-dense-dark", "keyframe_dense_dark", non_negative_float, "... and one whose mean grey is below this "
     "(0-255) runs it before them (0: off)"),
    ("--keyframe-dense-after-full", "keyframe_dense_after_full", non_negative_int, "... and, for keyframes on a drive "
     "too fast for optical flow, first after this many in a row only full-scale SIFT after a half-scale look (run or "
     "skipped as blind) or it verified (default 1; 0: off)"),
    ("--keyframe-dark-sift", "keyframe_dark_sift", on_off, "... and, in the dark, the full-scale SIFT steps after "
     "it when it fails (on/off; off: none, as in clutter)"),
    ("--flow-frames", "flow_frames", non_negative_int, "sequence/window: frames in a row tracked by optical flow "
     "from the last verified one when the camera moved little since (0: off)"),
    ("--motion-speed-factor", "motion_speed_factor", non_negative_float, "sequence/window: a verified pose farther "
     "than this x the max speed x the time since the last verified pose (+ 2 m) is refused as jumped (0: off)"),
    ("--belief-sigma", "belief_sigma_m", non_negative_float, "sequence mode: a verified pose pulls the belief to "
     "map places within about this many metres (0: off)"),
)
