"""`bench/serving_bench.py` takes adapted against unadapted within rounds run back to back (ABBA), so a
load that drifts while the bench runs weighs on both modes alike."""

from __future__ import annotations

import pytest


def test_rounds_alternate_which_mode_runs_first(bench_script):
    bench = bench_script("serving_bench")
    assert bench.paired_order(1) == ["regrad", "closed_book"]
    assert bench.paired_order(3) == ["regrad", "closed_book", "closed_book", "regrad", "regrad", "closed_book"]


def test_each_round_s_ratio_is_its_own_and_the_median_is_reported(bench_script):
    """A machine that slows by half between rounds: the ratio within each round stays 0.9, which one pass
    of each mode minutes apart would read as 0.45 or 1.8."""
    bench = bench_script("serving_bench")
    rates = [("regrad", 9.0), ("closed_book", 10.0), ("closed_book", 5.0), ("regrad", 4.5),
             ("regrad", 7.2), ("closed_book", 8.0)]
    passes = [(mode, {"rps": rps, "p95_ms": 1.0}) for mode, rps in rates]
    summary = bench.paired_summary(passes)
    assert [r["ratio"] for r in summary["paired_at_8"]] == [0.9, 0.9, 0.9]
    assert summary["adapted_vs_unadapted_at_8"] == pytest.approx(0.9)
    assert summary["unadapted_8"]["rps"] == 8.0          # the closed_book pass of median rate
    assert [r["closed_book_rps"] for r in summary["paired_at_8"]] == [10.0, 5.0, 8.0]
    with pytest.raises(ValueError):
        bench.paired_summary(passes[:3])                  # a round without its second pass
