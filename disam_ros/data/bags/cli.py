"""`disam-bag`: dataset folders <-> rosbags without a ROS install.

    disam-bag from-folder ROOT CONDITION OUT_BAG [--compressed jpeg|png] [--storage sqlite3|mcap]
    disam-bag info BAG [--json]
    disam-bag to-folder BAG OUT_ROOT CONDITION [--max-gap 0.2] [--strict] [--overwrite] [--depth-topic T]

A bad input exits with status 2
and one line on stderr naming the problem and the fix.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

from disam_ros.cliutil import (
    OneLineParser,
    folder_name,
    non_negative_float,
    non_negative_int,
    os_error_line,
    output_dir_error,
)
from disam_ros.data import bags
from disam_ros.data.bags.depth import check_depth_topic, depth_to_folder

# ----------------------------------------------------------------------------------------------------------
# disam-bag


def _topic_args(p: argparse.ArgumentParser, defaults: bool) -> None:
    hint = "" if defaults else " (default: the one topic of that type in the bag)"
    p.add_argument("--image-topic", default=None,
                   help="image topic" + (" (default /camera/image_raw, +/compressed)" if defaults else hint))
    p.add_argument("--info-topic", default=bags.DEFAULT_INFO_TOPIC if defaults else None,
                   help="CameraInfo topic" + hint)
    p.add_argument("--pose-topic", default=bags.DEFAULT_POSE_TOPIC if defaults else None,
                   help="ground-truth pose topic" + hint)


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="disam-bag", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{from-folder,info,to-folder}")

    p = sub.add_parser("from-folder", help="ROOT/<condition> (images, poses.txt, camera.yaml) -> rosbag2")
    p.add_argument("root")
    p.add_argument("condition", type=folder_name)
    p.add_argument("bag", help="output bag directory (must not exist)")
    p.add_argument("--compressed", choices=("jpeg", "png"), default=None, help="CompressedImage instead of raw rgb8")
    p.add_argument("--jpeg-quality", type=_jpeg_quality, default=95, help="0..100 (default %(default)s)")
    p.add_argument("--storage", choices=tuple(bags.STORAGES), default="sqlite3")
    p.add_argument("--frame-id", default="camera_optical_frame")
    p.add_argument("--map-frame", default="map")
    _topic_args(p, defaults=True)

    p = sub.add_parser("info", help="storage, duration and per-topic types and counts")
    p.add_argument("bag")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("to-folder", help="rosbag (ROS 2 or ROS 1) -> OUT_ROOT/<condition>")
    p.add_argument("bag")
    p.add_argument("out_root")
    p.add_argument("condition", type=folder_name)
    p.add_argument("--max-gap", type=non_negative_float, default=bags.DEFAULT_MAX_GAP_S,
                   help="longest pose gap (s) to interpolate across (default %(default)s)")
    p.add_argument("--strict", action="store_true", help="fail on pose stamps that go backwards instead of sorting")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_ROOT/<condition> when it exists")
    p.add_argument("--use-bag-time", action="store_true",
                   help="pair by the bag's log (receive) time instead of header stamps (for drivers that leave "
                        "header.stamp at zero)")
    p.add_argument("--depth-topic", default=None, help="sensor_msgs/Image depth topic (16UC1 mm or 32FC1 m): "
                   "writes OUT_ROOT/<condition>/depth/<stem>.png for the depth-branch training (seed 002)")
    p.add_argument("--depth-max-gap", type=non_negative_float, default=0.05,
                   help="largest |image - depth| stamp difference (s) to pair them (default %(default)s)")
    _topic_args(p, defaults=False)
    return ap


def _jpeg_quality(text: str) -> int:
    value = non_negative_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"{text!r} is not a JPEG quality: need 0..100")
    return value


def _from_folder(a: argparse.Namespace) -> None:
    opts = bags.BagWriteOptions(image_topic=a.image_topic, info_topic=a.info_topic, pose_topic=a.pose_topic,
                                compression=a.compressed, jpeg_quality=a.jpeg_quality, storage=a.storage,
                                frame_id=a.frame_id, map_frame=a.map_frame)
    s = bags.write_folder_bag(a.root, a.condition, a.bag, opts)
    print(f"wrote {s.path}: {s.frames} frames on " + ", ".join(f"{t} ({ty})" for t, ty in s.topics.items()))


def format_info(info: bags.BagInfo) -> str:
    lines = [f"path:      {info.path}", f"storage:   {info.storage} (ROS {info.ros_version})",
             f"duration:  {info.duration_s:.3f} s  ({info.start_ns * 1e-9:.3f} .. {info.end_ns * 1e-9:.3f})",
             f"messages:  {info.message_count}", "topics:"]
    width = max((len(t.topic) for t in info.topics), default=0)
    for t in info.topics:
        rate = f"{(t.count - 1) / info.duration_s:.2f} Hz" if t.count > 1 and info.duration_s > 0 else ""
        lines.append(f"  {t.topic:<{width}}  {t.msgtype:<40} {t.count:>7}  {rate}")
    return "\n".join(lines)


def _to_folder(a: argparse.Namespace) -> None:
    if a.depth_topic:
        check_depth_topic(a.bag, a.depth_topic)  # before anything is written
    with warnings.catch_warnings(record=True):  # the summary is printed below instead
        warnings.simplefilter("always")
        s = bags.bag_to_folder(a.bag, a.out_root, a.condition, image_topic=a.image_topic, pose_topic=a.pose_topic,
                               info_topic=a.info_topic, max_gap_s=a.max_gap, strict=a.strict, overwrite=a.overwrite,
                               use_bag_time=a.use_bag_time)
    print(f"wrote {s.path}: {s.frames} images" + (" with poses" if s.with_poses else " (no pose topic: no poses.txt)"))
    print(f"read: {s.stats.summary()}" + (f"; {s.duplicates} repeated image stamp(s) dropped" if s.duplicates else ""))
    if a.depth_topic:
        d = depth_to_folder(a.bag, s.path, a.depth_topic, a.depth_max_gap, a.use_bag_time)
        print(f"depth: {d.written} images with depth, {d.without} without (no {a.depth_topic} message within "
              f"{a.depth_max_gap} s), {d.corrupt} corrupt depth message(s) skipped")


def _output_error(a: argparse.Namespace) -> str | None:
    """A bad output path, found before the input is read (else it fails after the work, as an OSError)."""
    if a.cmd == "from-folder":
        return output_dir_error(a.bag, "BAG")
    if a.cmd == "to-folder":
        return output_dir_error(a.out_root, "OUT_ROOT")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if problem := _output_error(a):
        print(f"disam-bag {a.cmd}: error: {problem}", file=sys.stderr)
        return 2
    try:
        if a.cmd == "from-folder":
            _from_folder(a)
        elif a.cmd == "info":
            info = bags.bag_info(a.bag)
            print(json.dumps(info.to_dict(), indent=2) if a.json else format_info(info))
        else:
            _to_folder(a)
    except (bags.BagError, ValueError) as exc:
        print(f"disam-bag {a.cmd}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # FileNotFoundError included; a disk that is full or read-only too
        print(f"disam-bag {a.cmd}: error: {os_error_line(exc, 'check the paths')}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
