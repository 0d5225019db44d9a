"""disam-bench verify's table (disam_ros/bench/verify.py): every row has as many cells as the header names,
and the SIFT-polish and features columns carry the run's setting."""
from __future__ import annotations

from disam_ros.bench.verify import format_table


def test_every_row_has_a_cell_per_column():
    row = {"frame": "640x480", "features": "map", "scale": 1.0,
           "turn_deg": 25.0, "first_scale": 0.5, "dense": 2, "dense_first_after": 2,
           "polish": 600, "flow": 5, "sift_polish": 3, "frames": 120, "features_ms": 100.5, "verify_ms": 12.04,
           "verify_p90_ms": 256.1, "verified": 0.96, "within_0.25m_2deg": 0.86,
           "verify_ms_by_drive": {"overcast": 11.2, "night": 44.0}}
    head, rule, line = format_table([row, {**row, "sift_polish": 0}]).splitlines()[:3]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert len(cells) == len(head.strip("|").split("|")) == rule.count("---") == 17
    assert cells[head.strip("|").split("|").index(" SIFT polish ")] == "3"
    assert cells[1] == "map" and cells[12] == "12.0" and cells[-1] == "overcast 11, night 44"
