"""CPU thread defaults: bounded by the cap and by this process's cores, explicit counts kept, bad counts refused."""
from __future__ import annotations

import os

import pytest
import torch

from disam_ros import threads as T
from disam_ros.bench.threads import thread_counts


@pytest.fixture
def keep_torch_threads():
    import cv2
    from threadpoolctl import threadpool_limits

    before, cv_before, blas_before = torch.get_num_threads(), cv2.getNumThreads(), _blas_threads()
    yield
    torch.set_num_threads(before)
    cv2.setNumThreads(cv_before)
    threadpool_limits(limits=blas_before, user_api="blas")


def _blas_threads() -> int:
    """numpy's BLAS pool, as the library itself reports it."""
    from threadpoolctl import threadpool_info

    return min(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


def test_default_is_the_cap_or_the_cores_whichever_is_fewer(monkeypatch):
    for cores, want in ((1, 1), (2, 2), (16, 2), (64, 2)):
        monkeypatch.setattr(T, "available_cpus", lambda cores=cores: cores)
        assert T.default_threads() == want
        assert T.resolve_threads(0) == want and T.resolve_threads(None) == want
    assert T.default_threads(cap=8) == 8  # 64 cores, a larger cap


def test_available_cpus_is_the_affinity_mask_not_the_host():
    if hasattr(os, "sched_getaffinity"):
        assert T.available_cpus() == len(os.sched_getaffinity(0))


def test_apply_threads_sets_every_pool_and_keeps_an_explicit_count(keep_torch_threads):
    import cv2

    for n in (1, 3, 0):  # 3: above the cap, the user's word stands; 0: the default
        want = n or T.default_threads()
        assert T.apply_threads(n) == want
        assert torch.get_num_threads() == cv2.getNumThreads() == _blas_threads() == want
    T.apply_threads(1)
    assert T.apply_threads(3, image_pools=False) == 3 == torch.get_num_threads()  # map building: torch's alone
    assert cv2.getNumThreads() == _blas_threads() == 1


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_a_bad_count_is_one_line_naming_the_fix(bad):
    with pytest.raises(ValueError, match=r"threads=.* must be an integer >= 0 .*e\.g\. threads=2") as e:
        T.resolve_threads(bad)
    assert "\n" not in str(e.value)


def test_bench_counts_parse_all_and_refuse_zero():
    assert thread_counts("4,1,all,1") == sorted({1, 4, T.available_cpus()})
    with pytest.raises(ValueError, match="e.g. --counts"):
        thread_counts("0,2")


def test_the_node_parameter_refuses_a_negative_count_and_defaults_to_zero():
    pytest.importorskip("rclpy", reason="the node's parameters need ROS 2 (absent on a lent GPU machine)")
    from disam_ros.ros import node_params as P

    assert {p.name: p.default for p in P.PARAMETERS}["threads"] == 0
    assert P.check_value("threads", 3) == 3
    with pytest.raises(ValueError, match=r"'threads' must be >= 0 \(0 = min\(2, cores\)\), got -1"):
        P.check_value("threads", -1)


def test_disam_eval_takes_threads_and_refuses_a_negative_count(capsys):
    from disam_ros.eval.offline import build_parser

    assert build_parser().parse_args(["--map", "m", "--dataset", "d", "--out", "o", "--threads", "3"]).threads == 3
    assert build_parser().parse_args(["--map", "m", "--dataset", "d", "--out", "o"]).threads == 0
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["--map", "m", "--dataset", "d", "--out", "o", "--threads", "-2"])
    assert e.value.code == 2 and "--threads" in capsys.readouterr().err


def test_disam_build_map_takes_threads():
    from disam_ros.maps.build_map import _parser

    assert _parser().parse_args(["--out", "o", "--threads", "1"]).threads == 1
    assert _parser().parse_args(["--out", "o"]).threads == 0


def test_disam_build_map_bounds_opencv_only_when_asked(keep_torch_threads, tmp_path):
    """An explicit --threads bounds every pool (a vehicle's computer building a map beside its other work); the
    default leaves OpenCV's SIFT on every core it had. The runs stop at the refused --out, after the threads."""
    import cv2

    from disam_ros.maps.build_map import main

    taken = tmp_path / "a_file"
    taken.write_text("x")
    argv = ["--dataset", str(tmp_path), "--condition", "sunny", "--out", str(taken)]
    T.apply_threads(3)
    assert main([*argv, "--threads", "1"]) == 2
    assert torch.get_num_threads() == cv2.getNumThreads() == _blas_threads() == 1
    T.apply_threads(3)
    assert main(argv) == 2
    assert torch.get_num_threads() == T.default_threads() and cv2.getNumThreads() == _blas_threads() == 3
