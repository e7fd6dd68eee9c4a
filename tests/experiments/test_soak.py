"""``anyformer soak``'s memory sampling and summary (the 30-minute run itself is the lead's, not a test)."""

from __future__ import annotations

import os

import pytest

from anyformer.experiments.soak import build_parser, fit_command, slope_per_hour, summarize, tree_rss_mb


def test_resident_memory_of_this_process_tree_is_read_from_proc() -> None:
    with open("/proc/self/statm") as statm:
        mine = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    assert tree_rss_mb(os.getpid()) >= 0.9 * mine > 0
    assert tree_rss_mb(2**22 + 12345) == 0  # no such process


def test_summary_takes_the_baseline_after_the_warmup_and_fits_a_slope() -> None:
    # 50 MB more while warming up (the first 20 s), and a steady 1/36 MB a second: 100 MB an hour.
    samples = [(float(t), 100.0 + (50.0 if t < 20 else 0.0) + t / 36) for t in range(0, 200, 10)]
    metrics = summarize(samples, warmup=0.1)
    assert metrics["samples"] == 20 and metrics["rss_max_mb"] == pytest.approx(150 + 10 / 36)
    assert metrics["rss_start_mb"] == pytest.approx(100 + 20 / 36)  # the warm-up's first two samples are left out
    assert metrics["rss_slope_mb_per_h"] == pytest.approx(100.0)  # 1/36 MB a second
    assert metrics["rss_growth_mb"] == pytest.approx(170 / 36)
    assert slope_per_hour([0.0, 3600.0], [5.0, 5.0]) == 0.0 and slope_per_hour([1.0], [2.0]) == 0.0


def test_the_fit_runs_for_the_minutes_given_and_validates_every_n_steps() -> None:
    args = build_parser().parse_args(["--minutes", "90.5", "--val-every", "50", "--run-name", "s", "--", "--x", "1"])
    command = fit_command(args, "s_fit")
    assert command[command.index("--trainer.max_time") + 1] == "00:01:30:30"
    assert command[command.index("--trainer.val_check_interval") + 1] == "50"
    assert command[-2:] == ["--x", "1"] and command[command.index("--run-name") + 1] == "s_fit"
