"""A run's threads: one per idle core by default, and a hint when another process takes the cores it waits on."""
import os

import pytest
import torch

from cldiff_bench import threads


def test_a_process_given_one_thread_keeps_one_without_sampling(monkeypatch):
    monkeypatch.setattr(threads, "idle_cores", lambda *a: pytest.fail("sampled the load for one thread"))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert threads.default_threads() == 1
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("idle, expected", [(2.0, 2), (1.1, 1), (0.2, 1), (None, 2)])
def test_the_default_is_one_thread_per_idle_core(monkeypatch, idle, expected):
    monkeypatch.setattr(threads, "idle_cores", lambda *a: idle)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert threads.default_threads() == expected
    finally:
        torch.set_num_threads(previous)


def _stat(path, busy: float, idle: float) -> None:
    hz = os.sysconf("SC_CLK_TCK")
    path.write_text(f"cpu  {int(busy * hz)} 0 0 {int(idle * hz)} 0 0 0 0 0 0\ncpu0 0 0 0 0\n")


def test_the_watch_hints_when_another_process_takes_a_core(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    monkeypatch.setattr(threads, "PROC_STAT", stat)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    clock = iter([100.0, 110.0])  # 10 s of wall time
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(threads.time, "process_time", lambda: 0.0)  # this process: none of the busy time
    _stat(stat, busy=1000, idle=1000)
    watch = threads.CoreSharingWatch(2)
    _stat(stat, busy=1009, idle=1011)  # others kept 0.9 of a core busy
    hint = watch.check(20)
    assert hint is not None and "--threads 1" in hint and "500 ms per iteration" in hint
    assert watch.check(20) is None  # once


def test_the_watch_is_quiet_on_an_idle_machine(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    monkeypatch.setattr(threads, "PROC_STAT", stat)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    clock = iter([100.0, 110.0])
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    times = iter([0.0, 19.0])  # this process used both cores for the 10 s
    monkeypatch.setattr(threads.time, "process_time", lambda: next(times))
    _stat(stat, busy=1000, idle=1000)
    watch = threads.CoreSharingWatch(2)
    _stat(stat, busy=1019.5, idle=1000.5)
    assert watch.check(20) is None


def test_idle_cores_reads_this_machine():
    idle = threads.idle_cores(0.05)
    if idle is None:
        pytest.skip("this machine has no /proc/stat")
    assert 0 <= idle <= os.cpu_count()
