"""Peak memory is reported per phase: training's peak is training's, not the evaluation's after it."""
import pytest
import torch

from cldiff_bench.cost import CostMeter, _reset_rss_high_water_mark


@pytest.mark.skipif(not _reset_rss_high_water_mark(), reason="the OS cannot restart the peak-RSS count (not Linux)")
def test_each_phase_reports_its_own_peak():
    meter = CostMeter("cpu")
    meter.reset_peak_memory()
    with meter.phase("train"):
        big = torch.ones(100_000_000)  # 400 MB, touched
        del big
    with meter.phase("evaluation"):
        small = torch.ones(2_000_000)  # 8 MB
        del small
    peaks = meter.peak_memory()["peak_memory_by_phase"]
    assert peaks["train"]["rss_bytes"] - peaks["evaluation"]["rss_bytes"] > 300e6
    # A nested phase is its own: the replay generation inside training does not inherit training's peak.
    meter.reset_peak_memory()
    with meter.phase("train"):
        big = torch.ones(100_000_000)
        del big
        with meter.phase("replay_generation"):
            small = torch.ones(2_000_000)
            del small
    peaks = meter.peak_memory()["peak_memory_by_phase"]
    assert peaks["train"]["rss_bytes"] - peaks["replay_generation"]["rss_bytes"] > 300e6
