"""`disam-bench node` (sequential queries): the per-run summary and its table, on hand-made measurements."""
from __future__ import annotations

import pytest

from disam_ros.bench.node import summarize, table


def test_summary_keeps_start_up_and_first_query_apart_from_the_timed_latencies():
    r = {"latencies_ms": [30.0, 10.0, 20.0, 40.0], "missed": 1, "exit_code": 0, "up_s": 2.5, "first_ms": 310.0,
         "diagnostics": {"latency_total_ms_median": "12.5", "rss_mb": "341.6", "device": "cpu"}}
    row = summarize("tiny", 20, (640, 480), False, r)
    assert (row["queries"], row["missed"], row["median_ms"], row["max_ms"]) == (4, 1, 25.0, 40.0)
    assert row["p95_ms"] == pytest.approx(30.0 + 0.85 * 10.0)  # position 0.95 * 3 = 2.85 of the sorted four
    assert (row["up_s"], row["first_ms"], row["node_total_median_ms"], row["node_rss_mb"]) == (2.5, 310.0, 12.5, 341.6)
    header, rule, line = table([row]).splitlines()
    assert header.split()[-4:] == ["up", "s", "1st", "ms"] and set(rule) <= {"-", " "}
    assert line.split()[-2:] == ["2.5", "310.0"]
    # a run whose first query got no answer reports none rather than a number
    row = summarize("tiny", 20, (640, 480), False, {**r, "first_ms": None})
    assert table([row]).splitlines()[2].split()[-1] == "-"
