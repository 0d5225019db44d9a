"""Which steps of the verifier a frame runs, and in what order, from how the frames before it went.

Why: in rain, snow and fog the dense search (verify/gradient_search.py) is the step that verifies, and SIFT's
steps (the first look, the full-scale features, guided matching, turned guides, tracking) fail frame after frame
while costing ~190 ms of a 640x480 frame. Two rules, each with a probe that keeps SIFT's more accurate poses
within reach of a drive that leaves the weather:

* dense first: after `gradient_first_after` frames in a row that only the dense search verified, it runs first and
  a verified dense pose ends the search (when it does not verify, the SIFT steps follow), except every
  `gradient_first_probe_every`-th such frame, which keeps the usual order;
* SIFT skipped: after `gradient_skip_sift_after` frames in a row whose SIFT steps verified nothing, they are skipped
  (the dense search alone runs) except every `gradient_first_probe_every`-th frame, until they verify again.

Keyframes have a third, for cost rather than failure: after `keyframe_dense_after_full` keyframes in a row that only
the dense search verified, or only the full-scale SIFT features after a half-scale look ran or was skipped as blind,
the dense search runs first (same probe), on a drive too fast for optical flow to follow. In fog at 3 m a frame the
half-scale look verifies unsure and full-scale SIFT (~110 ms of one core to detect) polishes it or fails before the
dense search verifies, 280-390 ms of CPU a keyframe; the dense search verifies the same frames in ~90. Once the
looks are skipped as blind, full-scale SIFT alone costs 110-145 ms a keyframe there (demo town, `disam-bench node`).
Where flow follows, SIFT's poses start the chains (`flow_follows`). Where no look ran (a frame too narrow for one)
full-scale SIFT is the first step, not a dear second one, and a dense pose only the rougher answer (the test town's
320x240 daylight drive: a late hint 0.66 m off when those keyframes counted).
"""
from __future__ import annotations

from disam_ros.verify.config import VerifyConfig


class StepOrder:
    """The two rules' counters for one drive (reset with the drive)."""

    def __init__(self, config: VerifyConfig) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        self.last = "usual"  # what the latest frame ran (Verification.order): usual, dense first, SIFT skipped, or
        #                      dense next (a blind keyframe in the dark or in clutter: the verifier sets it)
        self.dense_only = 0  # frames in a row that only the dense search verified
        self.sift_fails = 0  # frames in a row whose SIFT steps ran and verified nothing
        self.sift_skips = 0  # frames whose SIFT steps were skipped since then
        self.dear = 0  # frames in a row that only full-scale SIFT or the dense search verified (the keyframe rule)

    def begin(self) -> None:
        """A new frame: its steps are the usual ones until a rule says otherwise."""
        self.last = "usual"

    def dense_first(self, keyframe: bool = False) -> bool:
        """Whether this frame runs the dense search first (asked first, once per frame that could run it)."""
        cfg = self.config
        first = self._due(cfg.gradient_first_after, self.dense_only) or \
            keyframe and self._due(cfg.keyframe_dense_after_full, self.dear)
        self.last = "dense first" if first else self.last
        return first

    def _due(self, after: int, n: int) -> bool:
        """A rule that counted `n` frames is due this frame: on (after > 0), reached, and this is not its probe."""
        return after > 0 and n >= after and (n - after + 1) % self.config.gradient_first_probe_every != 0

    def sift(self) -> bool:
        """Whether this frame runs the SIFT steps (asked once per frame: a skip is counted)."""
        after = self.config.gradient_skip_sift_after
        if after == 0 or self.sift_fails < after:
            return True
        self.sift_skips += 1
        if self.sift_skips % self.config.gradient_first_probe_every == 0:
            return True
        self.last = "SIFT skipped" if self.last == "usual" else f"{self.last}, SIFT skipped"
        return False

    def sift_ran(self, verified: bool, tracked: bool = False, full: bool = False) -> None:
        """The SIFT steps ran; `tracked` (keyframes only): only map-point tracking verified, which leaves both counts
        as they were. Why: at night tracking answers every other keyframe from the dense search's points, and
        counted as SIFT verifying it kept the dense search last, behind ~250 ms of failing SIFT steps (validation
        town 7, 30 Hz night keyframes: median 324 -> 122 ms, 83 -> 94 % within 0.25 m). Inline it stays counted:
        there each frame's own pose is published, and on a held-out 3 m night drive the dense poses that ran
        first were 0.2-0.27 m off where tracking had found 2-6 cm (75 -> 70 % within 0.25 m). `full`: the
        full-scale features were computed after a half-scale look, or where the looks were skipped as blind (the
        keyframe rule counts what they alone verified)."""
        if tracked:
            return
        self.sift_fails, self.sift_skips = (0, 0) if verified else (self.sift_fails + 1, self.sift_skips)
        if verified:
            self.dense_only, self.dear = 0, self.dear + 1 if full else 0

    def flow_follows(self) -> None:
        """Optical flow posed this keyframe (a renewal), or the camera moves slowly enough for it to follow
        (verify/flow_chain.FlowChain.outruns_flow, an unknown speed counted as slow): there a dense pose,
        which hands no map points on to the next chain (verify/flow.next_seed), would cut the chains short
        (validation town 13's `fog_dense` at 30 Hz, four replays: 47.9 -> 0 % within 0.25 m). The keyframe rule's
        count restarts."""
        self.dear = 0

    def dense_verified(self) -> None:
        """The dense search verified a frame nothing else did."""
        self.dense_only += 1
        self.dear += 1
