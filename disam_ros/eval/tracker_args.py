"""The tracker settings `disam-eval` and `disam-calibrate` share, as command-line options and back to a
TrackerConfig (a calibration holds for the settings it was fitted with, so both tools take the same ones)."""
from __future__ import annotations

import argparse

from disam_ros.cliutil import name_list, non_negative_float, positive_float, positive_int, probability
from disam_ros.eval.verify_options import VERIFY_OPTIONS
from disam_ros.tracking.sequence import SequenceConfig
from disam_ros.tracking.tracker import TRACKER_MODES, TrackerConfig
from disam_ros.verify.verifier import VerifyConfig


def mode_list(text: str) -> tuple[str, ...]:
    """'single,sequence' -> ('single', 'sequence'): tracker modes, in order, no repeats."""
    modes = tuple(dict.fromkeys(name_list(text)))
    unknown = [m for m in modes if m not in TRACKER_MODES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown mode(s) {', '.join(unknown)}: use {', '.join(TRACKER_MODES)}")
    return modes


def add_tracker_args(p: argparse.ArgumentParser) -> None:
    """The tracker settings disam-eval and disam-calibrate share (a calibration holds for the settings it
    was fitted with, so both tools must be given the same ones)."""
    d = SequenceConfig()
    p.add_argument("--modes", type=mode_list, default=TRACKER_MODES,
                   help=f"tracker modes, comma-separated (default {','.join(TRACKER_MODES)}; the first one gets "
                        "the detailed report)")
    p.add_argument("--max-speed-mps", type=positive_float, default=d.max_speed_mps,
                   help="fastest vehicle speed between frames (default %(default)s)")
    p.add_argument("--speed-change-prob", type=probability, default=d.speed_change_prob,
                   help="per frame, share of belief moving to each neighbouring speed bin (default %(default)s)")
    p.add_argument("--window-frames", type=positive_int, default=d.window_frames,
                   help="window mode: frames matched (default %(default)s)")
    p.add_argument("--place-contrast-frames", type=non_negative_float, default=TrackerConfig.place_contrast_frames,
                   help="discount map places that score high over about this many frames (0: off; default "
                        "%(default)s)")
    p.add_argument("--standstill-ratio", type=probability, default=TrackerConfig.standstill_ratio,
                   help="hold the belief on frames that differ from the last by less than this share of a "
                        "moving step (0: off; default %(default)s)")
    p.add_argument("--tolerance", type=tolerance_pair, default=(5.0, 10.0),
                   help="what a right answer is, 'METRES,DEGREES' (default 5,10)")
    for flag, name, kind, text in VERIFY_OPTIONS:
        p.add_argument(flag, type=kind, dest=name, default=getattr(VerifyConfig, name), metavar=flag[2:].upper(),
                       help=f"{text} (default %(default)s)")


def tolerance_pair(text: str) -> tuple[float, float]:
    parts = [t.strip() for t in text.split(",")]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'METRES,DEGREES' (e.g. 5,10)")
    return positive_float(parts[0]), positive_float(parts[1])


def tracker_config(args: argparse.Namespace) -> TrackerConfig:
    """TrackerConfig from `add_tracker_args` options (mode: the first of --modes)."""
    seq = SequenceConfig(max_speed_mps=args.max_speed_mps, speed_change_prob=args.speed_change_prob,
                         window_frames=args.window_frames)
    return TrackerConfig(mode=args.modes[0], sequence=seq, tolerance_m=args.tolerance[0],
                         tolerance_deg=args.tolerance[1], place_contrast_frames=args.place_contrast_frames,
                         standstill_ratio=args.standstill_ratio,
                         verify=VerifyConfig(enabled=not getattr(args, "no_verify", False),
                                             **{name: getattr(args, name) for _, name, _, _ in VERIFY_OPTIONS}))


__all__ = ["add_tracker_args", "mode_list", "tolerance_pair", "tracker_config"]
