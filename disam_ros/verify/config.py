"""How a retrieval is verified: every threshold and switch of the Verifier (disam_ros/verify/verifier.py, whose
module docstring says what each step does), chosen on a development town, never on the towns reported
(docs/pose.md). Kept apart so the node's parameters, disam-eval's options and the bench build one without the
verifier's machinery."""
from __future__ import annotations

from dataclasses import dataclass

FEATURE_CHOICES = ("map", "sift", "learned", "both")  # verify_features (verify/learned_step.py)


@dataclass(frozen=True)
class VerifyConfig:
    """How a retrieval is verified (module docstring). Pixel values are for the query image as it arrives."""

    enabled: bool = True
    candidates: int = 5  # places tried, in the retrieval's (or the belief's) order (3 until 2026-11-26, 985d1b5: 5 gave
    #                      single frames +2.5 to +6 points on the dev towns and photo collection, sequence unchanged)
    radius: float = 0.2  # guided matching: search radius, share of the image width
    ratio: float = 0.9  # ratio test among the candidates near a keypoint
    max_error_px: float = 8.0  # RANSAC inlier threshold
    min_inliers: int = 15  # fewer: not verified
    min_inlier_ratio: float = 0.25  # of the guided matches (a wrong place's matches fit by chance: <= 0.2)
    enough_inliers: int = 100  # a candidate with this many stops the search (saves the others' time)
    min_agreeing_inliers: int = 10  # two candidates whose poses agree verify each other from this many each ...
    agree_m: float = 0.5  # ... when within this distance ...
    agree_deg: float = 2.0  # ... and this angle
    agree_needs_reference: bool = True  # sequence/window: agreement verifies only once the drive has a verified
    #                                     pose (a drive's first must pass alone: verify/gate.may_agree)
    max_position_std_m: float = 1.0  # the solver's 1-sigma along the worst map axis
    max_shift_m: float = 10.0  # from the guiding candidate's pose
    max_turn_deg: float = 20.0
    sigma_floor_px: float = 0.5  # covariance: the keypoint noise is never taken as below this
    covariance_scale: float = 2.0  # x the solver's covariance: map points carry error too (dev town: errors
    #                                 were 1.5x the solver's sigma at the median, 3.3x at p90)
    covariance_ref_inliers: int = 60  # ... and x (60 / inliers)^2 below 60 inliers: a pose solved from few points
    #                                  is less certain than their residuals say (dev town: 85 -> 92 % of verified
    #                                  positions inside their 90 % ellipsoid; docs/pose.md); 0 = off
    min_width_px: int = 160  # narrower query images are not verified (too few local features to trust)
    first_scale: float = 0.5  # the candidates are first looked at with SIFT at this share of the map's detection
    #                           scale; the first sure verified look is the answer (1 = off; chosen on the dev town:
    #                           more frames within 0.25 m, a third of the cost in daylight, docs/pose.md)
    first_min_width_px: int = 320  # ... when the image is at least this wide at that scale (fewer features: skip)
    first_candidates: int = 3  # ... this many candidates in order, up to the first sure one
    first_max_trials: int = 1000  # ... its RANSAC gives up after this many trials (a sure pose is found early)
    first_max_keypoints: int = 1000  # the half-scale features (looks, flow prior) keep this many strongest keypoints
    #                                  (0: the recipe's cap). More are rain streaks and snowflakes (validation town
    #                                  7: 1,090-2,000 there, <= 730 elsewhere) whose descriptors cost time and match
    #                                  nothing: snow keyframes 152-177 -> 123-150 ms of CPU on three towns, rain
    #                                  132-152 -> 130-143, the same frames within 0.25 m. Keep it at least
    #                                  keyframe_dense_clutter x nfeatures: the clutter sign counts these keypoints
    first_probe_every: int = 4  # after two frames in a row whose looks verified nothing (blind: night, rain,
    #                             snow), look only every this many frames until one verifies (1 = every frame;
    #                             4 chosen on validation towns 7 / 101: night, rain, snow 5-10 % cheaper a frame,
    #                             every accuracy figure the same; an unsure look still counts as seeing, so dusk
    #                             keeps its polished looks and daylight is untouched; single mode: every frame)
    first_min_inliers: int = 15  # ... and the look is the answer only with this many inliers (else the full steps
    #                              try every candidate and keep the one with the most)
    first_max_std_m: float = 0.15  # ... and only when its published covariance puts it within this 1-sigma along
    #                                its worst axis (dev town: every look-verified pose over 0.25 m off had >= 0.18)
    first_polish_inliers: int = 60  # a verified look that is not sure is the answer when, polished from it with the
    #                                 full-scale features, the pooled solve holds this many inliers (0 = off; 60
    #                                 chosen on validation town 7: dusk 200 -> 150 ms a frame, no frame lost; held
    #                                 out towns 11 / 0: fog 178 -> 125 / 156 -> 135 ms, every figure unchanged)
    candidate_polish_inliers: int = 60  # the first full-scale candidate that verifies is the answer when, polished,
    #                                     the pooled solve holds this many inliers: the candidates after it would
    #                                     only compete for the same place (0 = off, every candidate tried; 30 Hz
    #                                     keyframes: validation town 7 fog 210 -> 186 ms, held out town 11 fog
    #                                     182 -> 148 ms, every accuracy figure the same; docs/notes/pose.md)
    first_polish_half: bool = True  # ... polished first with the look's own half-scale features, full-scale SIFT
    #                                 (~100 ms of a 640x480 frame) only when that pool holds fewer (validation towns
    #                                 7 / 101: dusk median 208 -> 207 / 194 -> 68 ms, every accuracy figure the same)
    first_polish_half_inliers: int = 50  # ... that half-scale pool's own threshold (0: first_polish_inliers'): a
    #                                      quarter of the keypoints pool fewer. 50 chosen against 40 and 60 on
    #                                      validation town 7 (30 Hz keyframes: dusk 186 -> 61 ms, accuracy the same);
    #                                      real time on one core, night_dense 0 -> 35 % within 0.25 m (docs/notes)
    first_polish_near: bool = True  # keyframes: when no look verified, the look refused only for too few inliers or
    #                                 too low a ratio (solved: >= min_agreeing_inliers) with the most is polished as an
    #                                 unsure verified look is (3 m drives, cold: validation town 5 dusk 239 -> 72 ms,
    #                                 the same frames within 0.25 m on towns 3, 5, 7, 9 but one; docs/notes/pose.md)
    track_frames: int = 5  # map-point tracking: frames a verified frame's map points carry on (0 = off;
    #                        5 chosen on the dev town, docs/pose.md)
    track_max_gap_s: float = 1.0  # ... when the frame follows the last verified one within this time
    track_radius_px: float = 2.0  # a map point the solved pose projects this close to a keypoint is carried on
    belief_sigma_m: float = 2.0  # sequence mode: a verified pose narrows the belief to places about this near
    #                              (0 = off; 2 m chosen on the dev town from 1 / 2 / 4, docs/pose.md)
    belief_floor: float = 0.05  # ... never below this share, so a wrong verified pose is outvoted by later frames
    turn_search_deg: float = 25.0  # when no guided attempt verifies, the best candidate guides again turned this
    #                                much left and right about the camera's vertical axis (0 = off)
    unguided_candidates: int = 0  # when still nothing verifies, this many candidates are matched unguided (ratio
    #                               test, mutual); a solve from those matches with at least unguided_min_inliers
    #                               then guides a second, tight guided match (unguided_radius), judged by the usual
    #                               inlier gate with unguided_max_turn_deg: cameras 1-2 m and 10-30 deg off every
    #                               map image (handheld, photo collections). Off by default: held out it verified
    #                               a look-alike place 64 m away in fog (docs/notes/pose.md, 2026-11-26)
    unguided_ratio: float = 0.8  # ... Lowe's ratio
    unguided_max_turn_deg: float = 45.0  # ... allow this much rotation from the candidate (no guide bias) ...
    unguided_radius: float = 0.05  # ... the second match's search radius, a share of the image width (32 px at 640)
    gradient_candidates: int = 2  # when nothing above verifies (tracking included), this many candidates are
    #                               searched densely: their map keypoints looked for in the query by gradient
    #                               descriptors, no query keypoints (rain, snow, fog; verify/gradient_search.py;
    #                               needs a map built with them; 0 = off; chosen on the dev town, docs/pose.md)
    gradient_single: bool = False  # ... in single mode too (the tracker turns it off there unless this is set:
    #                                a single frame cannot tell two look-alike places apart, and the dense search
    #                                verified a look-alike 5 m off on the dev town, 64 m off in a held-out one)
    gradient_with_prior: bool = False  # ... and in single mode on a frame whose candidates a spatial prior gated
    #                                   (GNSS, an operator's guess), which rules out the far look-alikes: +8-12
    #                                   points held out, but off: in one held-out town two frames were verified
    #                               6.6-7.7 m off at a look-alike block inside the gate (docs/notes/pose.md, 2026-11-26)
    gradient_first_after: int = 2  # ... and after this many frames in a row that only it verified, it runs FIRST
    #                               and a verified dense pose ends the search (saves the SIFT steps that keep
    #                               failing in rain, snow, fog: ~150 ms a frame); 0 = off (verifier docstring)
    gradient_first_probe_every: int = 4  # ... except every this many such frames, which try SIFT first again
    gradient_skip_sift_after: int = 6  # ... and after this many frames in a row whose SIFT steps (first look, full
    #                                    scale) verified nothing, those steps are skipped (the dense search alone
    #                                    runs) except every gradient_first_probe_every-th frame; 0 = never skipped
    keyframe_dense_clutter: float = 0.5  # a keyframe whose first looks verified nothing runs the dense search
    #                                    right after them, before the full-scale SIFT steps, when the looks found at
    #                                    least this share of the SIFT recipe's keypoint cap (rain, snow; > 1: off) ...
    keyframe_dense_dark: float = 64.0  # ... or its mean grey (0-255) is below this (night; 0: off). Why: a drive's
    #                                    first keyframes come before the rules above count anything
    keyframe_dense_after_full: int = 1  # ... and, for keyframes on a drive too fast for optical flow (speed between
    #                                   verified poses, or to the nearest candidate place, x frame interval >
    #                                   flow_max_step_m: 3 m a frame), after this many in a row that only the dense
    #                                   search verified, or only full-scale SIFT after a half-scale look ran (or was
    #                                   skipped as blind): ~90 ms of CPU a 3 m fog keyframe, not 280-390; 0: off
    #                                   (verify/order.py, notes/pose.md)
    keyframe_dark_sift: bool = False  # ... and a dark one runs the full-scale SIFT steps after a failed dense
    #                                   search, next or first (off: none, as in clutter; validation night drives at
    #                                   30 Hz: keyframes 20-45 % faster, answers verified off halved, within 0.25 m
    #                                   inside the replays' spread; paced, those steps verified 4 of 25 for ~250 ms)
    gradient_radius: float = 0.1  # ... each map point within this share of the width of its predicted position
    gradient_stride: int = 4  # ... on a grid this many pixels apart (at 640 px width; scaled with the image)
    gradient_max_points: int = 400  # ... the first this many map points (strongest) in or near the view
    gradient_ratio: float = 0.95  # ... a find kept when nearer than this x the runner-up two grid steps away
    #                               (1.0: every find; dev town: wrong places' inliers 87 -> 47 at most)
    gradient_min_inliers: int = 60  # ... and verified with this many inliers (dev town: a place 20-45 m off
    #                                 reached 47)
    gradient_min_inlier_ratio: float = 0.3  # ... that are this share of the distinct finds (dev town: poses of the
    #                                         right place 1-5 m off reached 0.44, 3 of 73 passing both)
    gradient_max_tilt_deg: float = 4.0  # ... a dense pose whose camera's vertical axis is tilted from the
    #                                     candidate's by more than this is inconsistent (pitch and roll stay on a
    #                                     vehicle; wrong dense poses tilted 5.9-7.2 deg on the dev town, right ones
    #                                     <= 2.2 deg; verify/dense_step.tilt_deg; 0 = off)
    gradient_agree_inliers: int = 30  # ... or two candidates' dense poses agree (agree_m, agree_deg), each from
    #                                   this many inliers
    gradient_rival_m: tuple[float, float] = (0.0, 0.0)  # ... when set (e.g. (8, 16)), a dense pose verified by
    #                                 fewer than gradient_sure_inliers at an inlier ratio below gradient_sure_ratio
    #                                 must also find more inliers than every map image this far (m) from its
    #                                 candidate (a repeated block): else "ambiguous". Off: on the dev town it stopped
    #                                 6 of 7 wrong-candidate poses 9-78 m off, but end to end (where no run met such
    #                                 a pose) it lost right frames and more than doubled the cost; docs/pose.md
    gradient_single_rival_m: tuple[float, float] = (8.0, 16.0)  # ... the band single mode uses while
    #                                 gradient_rival_m is off: there the search runs on frames a prior gated (no
    #                                 belief, no motion check; the gate spans tens of metres); on the dev towns it
    #                                 stopped a dense pose 4.98 m off for -1.3 points (docs/notes/pose.md, 2026-11-26)
    gradient_sure_inliers: int = 100  # ... a dense pose with this many inliers, or ...
    gradient_sure_ratio: float = 0.4  # ... this inlier ratio, is sure: no rival is searched
    gradient_polish_points: int = 600  # ... a verified dense pose is searched again from itself: this many map
    #                                    points (0 = off; verify/gradient_search.polish; dev town: 94 -> 101 of 109
    #                                    within 0.25 m for ~24 ms a frame it verifies) ...
    gradient_polish_radius: float = 0.05  # ... each within this share of the width of where that pose projects it
    gradient_polish_max_shift_m: float = 1.0  # ... kept only within this distance ...
    gradient_polish_max_turn_deg: float = 2.0  # ... and this rotation of the first pose
    gradient_covariance_scale: float = 16.0  # ... and x this on top of covariance_scale: the finds' errors are
    #                                          correlated (one descriptor scale, a grid), so the solver's covariance
    #                                          was too tight (dev town: 39 % of dense poses inside their 90 %
    #                                          ellipsoid, 89 % at x16; SIFT poses 94 %)
    gradient_sigma_floor_px: float = 2.0  # ... their covariance taking the keypoint noise as at least this
    #                                       (half the grid stride: the finds are grid positions, refined)
    flow_frames: int = 5  # sequence/window: frames in a row tracked by optical flow from the last verified one
    #                       before a full verification (0 = off; dev town's 8x-rate drives: 279 of 320 frames within
    #                       0.25 m against 269 off, 12-18 ms a frame on all but fog; verify/flow.py)
    flow_max_step_m: float = 1.0  # ... tried only when the camera is predicted to have moved at most this far
    flow_min_inliers: int = 50  # ... and verified with this many inliers (30 let chains followed from a dense
    #                             pose's inliers decay and drift: dev towns' rain 55 vs 49 of 80 within 0.25 m) ...
    flow_min_inlier_ratio: float = 0.6  # ... that are this share of the points flow followed
    flow_max_error_px: float = 3.0  # ... RANSAC's inlier threshold (flow is sub-pixel)
    flow_map_points: bool = True  # ... following the keyframe's map points the verified pose puts on the image
    #                               too, not only the solve's inliers (dusk: 30-40 inliers, too few to follow)
    flow_max_points: int = 300  # ... at most this many points followed (flow costs ~0.02 ms a point)
    flow_fb_px: float = 0.5  # ... a point kept when followed back it lands this close to where it started
    flow_window_px: int = 21  # ... Lucas-Kanade's square patch, pixels (odd; OpenCV's default). With verification
    #                           beside the frame loop the tracker uses TrackerConfig.keyframe_flow_window_px
    flow_seed_max_sigma_m: float = 0.25  # ... map points projected only from a pose this well determined (worst
    #                                      axis 1-sigma, m: a 17-inlier SIFT pose 0.39 m off held 10 fog frames there)
    flow_keyframe_check_m: float = 0.5  # beside the frame loop: a verified keyframe farther than this (or agree_deg)
    #                                     from the pose the chain published for its frame ends the chain, unseeded
    #                                     (one of the two is wrong; the next keyframe decides); 0 = off (validation
    #                                     town 7, 30 Hz fog over 4.8 s: verified poses off 23.4 -> 14.3 a replay)
    flow_drift_m: float = 0.007  # ... a flow pose's position sigma grows by this much on each axis per frame followed
    #                              since the last solved pose: flow drifts, and a chain of 26-31 frames was 0.47 m off
    #                              (rms) where its covariance said centimetres (30 Hz keyframes, validation town 7: NEES
    #                              52 -> 2.9; the smallest step whose mean NEES is <= 3; docs/notes/pose.md)
    #                              Beside the frame loop, the floor: keyframes measure each drive's own (flow_chain.py)
    flow_catch_up_far: bool = True  # beside the frame loop: a keyframe's catch-up to the newest frame (flow_chain.py)
    #                                 follows from each frame the farthest one flow would follow in one step
    #                                 (flow_max_step_m), not every frame (validation 8x drives at 30 Hz, one core:
    #                                 within 0.25 m 18.6 -> 25.1 %, answers verified off 35 -> 19 a replay)
    motion_speed_factor: float = 1.5  # sequence/window: a verified pose farther from the last verified one than
    #                                   this x the tracker's max speed x the time between them, plus motion_slack_m,
    #                                   is refused as "jumped" (verify/motion.py; 0 = off; single mode: off)
    motion_slack_m: float = 2.0  # ... the slack for the two poses' errors
    motion_window_s: float = 1.0  # ... only while the last verified pose is at most this old
    polish_images: int = 3  # a verified SIFT pose is matched again from itself against this many map images
    #                         nearest to it (the keyframe among them, usually) and solved from the pooled
    #                         matches (verify/polish.py; 0 = off) ...
    polish_radius: float = 0.03  # ... each map point searched within this share of the width of where the pose puts it
    polish_max_view_deg: float = 30.0  # ... map images looking within this angle of the camera only
    polish_max_error_px: float = 4.0  # ... RANSAC's inlier threshold (dev town seed 3: 4 px a frame or two over 8)
    polish_max_shift_m: float = 0.5  # ... the polished pose kept when no fewer inliers and within this distance ...
    polish_max_turn_deg: float = 2.0  # ... and this rotation of the first
    prior_min_inliers: int = 40  # a frame optical flow posed but does not answer (its chain's hops are spent; a
    #                              keyframe) is first matched around that pose against the map images near it
    #                              (half-scale features, then full-scale) and answered by the pooled solve when it
    #                              holds this many inliers (verify/prior_step.py; 0 = off; 40 chosen on validation
    #                              town 7's 30 Hz drives over 60: dusk median 251 -> 72 ms, every figure the same)
    prior_radius: float = 0.1  # ... each map point searched within this share of the width of where the flow pose
    #                            puts it (polish_radius's 0.03 only confirmed a guide 0.3 m off: test town, 0.26-0.51 m
    #                            off against 0.02-0.11 at 0.1)
    prior_dense_dark: bool = True  # ... in the dark (mean grey under keyframe_dense_dark) the map image nearest the
    #                                flow pose is first searched densely around it (gradient_polish_radius and
    #                                gradient_polish_points, judged by the dense search's gate; no SIFT detection).
    #                                Validation night renewals, paced: CPU median 174 -> 79 ms, largest error 1.2 ->
    #                                0.31 m; at 30 Hz answers verified off 25 -> 8 a replay, within 0.25 m 14.8 -> 13.0
    prior_dense_before_full: bool = True  # ... elsewhere that dense search comes after the half-scale pool and before
    #                                       full-scale SIFT (fog: half-scale pools hold too few, full-scale detection
    #                                       is ~100 ms). Validation camera-rate drives at 30 Hz, keyframes, four replays
    #                                       an arm: answers verified off 50 -> 29 a replay, within 36.5 -> 39.3 %
    unguided_min_inliers: int = 12  # ... inliers the unguided solve needs before it may guide (8 let wrong places
    #                                 through on the dev town's handheld frames, 12 none: docs/pose.md)
    regate_far_poses: bool = True  # a SIFT attempt refused only for lying beyond max_shift_m / max_turn_deg of its
    #                                 guide is judged again at itself: the map images near its pose matched and
    #                                 solved as candidates, verified when one passes the gate and agrees (agree_m,
    #                                 agree_deg) with it (verify/regate.py; real photographs: right poses 2-4 cm off
    #                                 refused for a wrong guide 12-20 m away). On since the held-out towns lost nothing
    regate_images: int = 2  # ... at most this many such map images per frame, nearest first
    verify_features: str = "map"  # sift, learned (the map's learned keypoints instead of SIFT's steps), both
    #                               (learned when SIFT's steps verify nothing) or map: what the map was built for
    learned_radius: float = 0.2  # learned matching: search radius around the candidate's prediction, share of width
    learned_ratio: float = 1.0  # ... ratio test among the map keypoints within it (1 = mutual nearest neighbour only)
    learned_min_inliers: int = 15  # ... a learned pose is verified with this many inliers ...
    learned_min_inlier_ratio: float = 0.25  # ... at least this share of the learned matches
    learned_agree_m: float = 2.0  # > 0: a learned pose is verified only when another candidate's learned solve
    #                               lands within this distance of it (else "ambiguous"; 0 = off)
    learned_sift_radius: float = 0.1  # a verified learned pose guides SIFT within this share of the width to the
    #                                    map images around it (0 = off; verify/learned_step.sift_refined) ...
    learned_sift_max_shift_m: float = 2.0  # ... and their solve replaces it when within this distance ...
    learned_sift_max_turn_deg: float = 3.0  # ... and this turn of it
    budget_ms: float = 0.0  # time box: no step or candidate starts after this many ms of a frame's verification
    #                         (the first always runs; 0 = none). Bounds the night frames' 1-2 s on the CPU

    def __post_init__(self) -> None:
        checks = (("candidates", self.candidates >= 1), ("radius", 0.0 < self.radius <= 1.0),
                  ("ratio", 0.0 < self.ratio <= 1.0), ("max_error_px", self.max_error_px > 0),
                  ("min_inliers", self.min_inliers >= 6),
                  ("min_agreeing_inliers", 6 <= self.min_agreeing_inliers <= self.min_inliers),
                  ("agree_m", self.agree_m > 0), ("agree_deg", self.agree_deg > 0),
                  ("min_inlier_ratio", 0 <= self.min_inlier_ratio < 1),
                  ("enough_inliers", self.enough_inliers >= self.min_inliers),
                  ("max_position_std_m", self.max_position_std_m > 0), ("max_shift_m", self.max_shift_m > 0),
                  ("max_turn_deg", 0 < self.max_turn_deg <= 180), ("sigma_floor_px", self.sigma_floor_px >= 0),
                  ("covariance_scale", self.covariance_scale >= 1.0),
                  ("covariance_ref_inliers", self.covariance_ref_inliers >= 0),
                  ("track_frames", self.track_frames >= 0), ("prior_min_inliers", self.prior_min_inliers >= 0),
                  ("prior_radius", 0.0 < self.prior_radius <= 1.0),
                  ("track_max_gap_s", self.track_max_gap_s > 0),
                  ("track_radius_px", self.track_radius_px > 0), ("belief_sigma_m", self.belief_sigma_m >= 0),
                  ("belief_floor", 0 < self.belief_floor <= 1), ("unguided_candidates", self.unguided_candidates >= 0),
                  ("turn_search_deg", 0 <= self.turn_search_deg < 90),
                  ("unguided_ratio", 0.0 < self.unguided_ratio <= 1.0),
                  ("unguided_max_turn_deg", 0 < self.unguided_max_turn_deg <= 180),
                  ("unguided_min_inliers", self.unguided_min_inliers >= self.min_agreeing_inliers),
                  ("unguided_radius", 0.0 < self.unguided_radius <= 1.0),
                  ("gradient_candidates", self.gradient_candidates >= 0),
                  ("gradient_radius", 0.0 < self.gradient_radius <= 1.0),
                  ("gradient_first_after", self.gradient_first_after >= 0),
                  ("keyframe_dense_after_full", self.keyframe_dense_after_full >= 0),
                  ("keyframe_dense_clutter", self.keyframe_dense_clutter >= 0),
                  ("keyframe_dense_dark", 0 <= self.keyframe_dense_dark <= 255),
                  ("gradient_first_probe_every", self.gradient_first_probe_every >= 1),
                  ("gradient_skip_sift_after", self.gradient_skip_sift_after >= 0),
                  ("gradient_ratio", 0.0 < self.gradient_ratio <= 1.0),
                  ("gradient_stride", 1 <= self.gradient_stride <= 32),
                  ("gradient_max_points", self.gradient_max_points >= self.gradient_min_inliers),
                  ("gradient_min_inliers", self.gradient_min_inliers >= self.min_inliers),
                  ("gradient_agree_inliers", 6 <= self.gradient_agree_inliers <= self.gradient_min_inliers),
                  ("gradient_min_inlier_ratio", 0 <= self.gradient_min_inlier_ratio < 1),
                  ("gradient_sigma_floor_px", self.gradient_sigma_floor_px >= 0),
                  ("gradient_max_tilt_deg", 0 <= self.gradient_max_tilt_deg <= 180),
                  ("gradient_covariance_scale", self.gradient_covariance_scale >= 1.0),
                  ("gradient_rival_m", len(self.gradient_rival_m) == 2
                   and 0 <= self.gradient_rival_m[0] <= self.gradient_rival_m[1]),
                  ("gradient_single_rival_m", len(self.gradient_single_rival_m) == 2
                   and 0 <= self.gradient_single_rival_m[0] <= self.gradient_single_rival_m[1]),
                  ("gradient_sure_inliers", self.gradient_sure_inliers >= 0),
                  ("gradient_polish_points", self.gradient_polish_points == 0
                   or self.gradient_polish_points >= self.gradient_min_inliers),
                  ("gradient_polish_radius", 0.0 < self.gradient_polish_radius <= 1.0),
                  ("gradient_polish_max_shift_m", self.gradient_polish_max_shift_m >= 0),
                  ("gradient_polish_max_turn_deg", self.gradient_polish_max_turn_deg >= 0),
                  ("gradient_sure_ratio", 0 <= self.gradient_sure_ratio <= 1),
                  ("first_scale", 0.1 <= self.first_scale <= 1.0),
                  ("first_min_width_px", self.first_min_width_px >= self.min_width_px),
                  ("first_min_inliers", self.first_min_inliers >= self.min_inliers),
                  ("first_max_std_m", self.first_max_std_m > 0), ("first_candidates", self.first_candidates >= 1),
                  ("first_probe_every", self.first_probe_every >= 1),
                  ("first_polish_inliers", self.first_polish_inliers >= 0),
                  ("candidate_polish_inliers", self.candidate_polish_inliers >= 0),
                  ("first_polish_half_inliers", self.first_polish_half_inliers >= 0),
                  ("first_max_trials", self.first_max_trials >= 100),
                  ("first_max_keypoints",
                   self.first_max_keypoints == 0 or self.first_max_keypoints >= self.min_inliers),
                  ("motion_speed_factor", self.motion_speed_factor >= 0),
                  ("flow_frames", self.flow_frames >= 0), ("flow_max_step_m", self.flow_max_step_m >= 0),
                  ("flow_min_inliers", self.flow_min_inliers >= 6),
                  ("flow_max_points", self.flow_max_points >= self.flow_min_inliers),
                  ("flow_min_inlier_ratio", 0 <= self.flow_min_inlier_ratio < 1),
                  ("flow_max_error_px", self.flow_max_error_px > 0), ("flow_fb_px", self.flow_fb_px > 0),
                  ("flow_drift_m", self.flow_drift_m >= 0),
                  ("flow_keyframe_check_m", self.flow_keyframe_check_m >= 0),
                  ("flow_window_px", self.flow_window_px >= 5 and self.flow_window_px % 2 == 1),
                  ("motion_slack_m", self.motion_slack_m >= 0), ("polish_images", self.polish_images >= 0),
                  ("polish_radius", 0.0 < self.polish_radius <= 1.0),
                  ("polish_max_view_deg", 0 < self.polish_max_view_deg <= 180),
                  ("polish_max_error_px", self.polish_max_error_px > 0),
                  ("polish_max_shift_m", self.polish_max_shift_m >= 0),
                  ("polish_max_turn_deg", self.polish_max_turn_deg >= 0),
                  ("motion_window_s", self.motion_window_s > 0), ("regate_images", self.regate_images >= 1),
                  ("verify_features", self.verify_features in FEATURE_CHOICES),
                  ("learned_radius", 0.0 < self.learned_radius <= 1.0),
                  ("learned_ratio", 0.0 < self.learned_ratio <= 1.0),
                  ("learned_min_inliers", self.learned_min_inliers >= self.min_agreeing_inliers),

                  ("learned_min_inlier_ratio", 0 <= self.learned_min_inlier_ratio < 1),
                  ("learned_agree_m", self.learned_agree_m >= 0),
                  ("learned_sift_radius", 0.0 <= self.learned_sift_radius <= 1.0),
                  ("learned_sift_max_shift_m", self.learned_sift_max_shift_m >= 0),
                  ("learned_sift_max_turn_deg", self.learned_sift_max_turn_deg >= 0),
                  ("budget_ms", self.budget_ms >= 0))
        bad = [name for name, ok in checks if not ok]
        if bad:
            raise ValueError(f"VerifyConfig: {', '.join(f'{b}={getattr(self, b)!r}' for b in bad)} out of range "
                             "(see disam_ros/verify/config.py VerifyConfig for the allowed values)")
