"""`cldiff-bench sweep status SWEEP_DIR`: where each cell of a sweep stands, from the files its runs and jobs
write (and, for Slurm jobs, the cluster's accounting when it answers):

    done     its run directory holds the result of its configuration
    running  a process holds the cell's lock (this sweep's job, or another sweep's)
    failed   its last run failed (with the last line of its log), or its job ended without running it
    pending  not finished and not running: queued, requeued after a preemption, interrupted, or not submitted
"""
from __future__ import annotations

import os
import socket
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..runlock import lock_holder, lock_path, is_locked
from .files import jobs_dir, last_line, log_path, read_json_or_none, state_path
from .manifest import load

STATES = ("done", "running", "failed", "pending")
# Slurm states of a job that has not ended (submitit's list).
SLURM_UNFINISHED = {"READY", "PENDING", "RUNNING", "UNKNOWN", "REQUEUED", "COMPLETING", "PREEMPTED", "SUSPENDED",
                    "CONFIGURING", "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT"}
EVALUATORS_KEY = "_evaluators"


@dataclass
class CellStatus:
    key: str
    state: str               # done | running | failed | pending
    detail: str = ""
    job: str | None = None
    active: bool = False     # will move on by itself (running, queued, requeued), not only when submitted again


def _latest(manifest: dict, key: str) -> tuple[dict | None, str | None, str | None]:
    """(the last submission that dealt with the cell, what it did with it, its job id)."""
    for submission in reversed(manifest.get("submissions", [])):
        if key in submission.get("cells", {}) or key in submission.get("jobs", {}):
            return submission, submission.get("cells", {}).get(key), submission.get("jobs", {}).get(key)
    return None, None, None


def _alive(pid, host) -> bool:
    if not pid or host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """The cluster's states of these jobs ({} when it cannot be asked: no submitit, no sacct)."""
    if not job_ids:
        return {}
    try:
        from submitit.slurm.slurm import SlurmInfoWatcher
        watcher = SlurmInfoWatcher(delay_s=0)
        for job_id in job_ids:
            watcher.register_job(job_id)
        watcher.update()
        states = {j: watcher.get_state(j, mode="cache") for j in job_ids}
    except Exception:  # noqa: BLE001 (the states are extra information)
        return {}
    return {j: s.split()[0].upper() for j, s in states.items() if s and s.upper() != "UNKNOWN"}


def _result_detail(result: dict) -> str:
    parts = []
    fid = (result.get("metrics") or {}).get("fid")
    if isinstance(fid, list) and fid and isinstance(fid[-1], (int, float)):
        parts.append(f"fid {fid[-1]:.4g} after task {len(fid) - 1}")
    if isinstance(result.get("wall_seconds"), (int, float)):
        parts.append(f"{result['wall_seconds'] / 60:.1f} min")
    return ", ".join(parts)


def _job_log_line(sweep_dir: Path, job: str | None) -> str | None:
    return last_line(jobs_dir(sweep_dir) / f"{job}_0_log.out") if job else None


def cell_status(sweep_dir: Path, key: str, record: dict | None, manifest: dict, slurm: dict[str, str]) -> CellStatus:
    submission, action, job = _latest(manifest, key)
    executor = ((submission or {}).get("executor") or {}).get("kind", "local")
    job_state = slurm.get(job) if job and executor == "slurm" else None
    where = f"{job} {job_state}" if job_state else job
    if record is not None:
        run_dir = Path(record["run_dir"])
        result = read_json_or_none(run_dir / "result.json")
        if isinstance(result, dict) and (record.get("config_hash") in (None, result.get("config_hash"))):
            return CellStatus(key, "done", _result_detail(result), job)
        lock = lock_path(run_dir)
        if is_locked(lock):
            holder = lock_holder(lock) or {}
            if holder.get("sweep_dir") not in (None, str(Path(sweep_dir).absolute())):
                return CellStatus(key, "running", f"in another sweep ({holder.get('sweep_dir')}, job "
                                                  f"{holder.get('job_id')} on {holder.get('host')})", job, True)
            return CellStatus(key, "running", last_line(log_path(sweep_dir, key)) or "", where, True)
    state = read_json_or_none(state_path(sweep_dir, key))
    if state is not None and submission is not None and state.get("t", 0) < submission.get("t", 0):
        state = None  # from before the last submission
    line = state.get("last_line") if state else None
    line = line or last_line(log_path(sweep_dir, key))
    if state is not None:
        s = state.get("state")
        if s == "failed":
            return CellStatus(key, "failed", line or "", where)
        if s == "interrupted":
            return CellStatus(key, "pending", "interrupted: running the sweep again continues it", where)
        if s == "requeued":
            if job_state and job_state not in SLURM_UNFINISHED:
                return CellStatus(key, "failed", f"requeued after a preemption or time-out, but its job ended "
                                                 f"({job_state})", where)
            return CellStatus(key, "pending", f"requeued after a preemption or time-out ({state.get('requeues')} "
                                              f"so far)", where, True)
        if s == "locked":
            holder = state.get("locked_by") or {}
            return CellStatus(key, "pending", f"was being run by another sweep ({holder.get('sweep_dir')}), which "
                                              f"did not finish it", where)
        if s == "running":
            if job_state in ("RUNNING", "COMPLETING"):
                return CellStatus(key, "running", line or "", where, True)
            return CellStatus(key, "failed", f"its job ended during the run ({job_state or 'the process is gone'})"
                                             + (f": {line}" if line else ""), where)
        if s == "done":
            if record is None:  # the evaluators' job (no result of its own)
                return CellStatus(key, "done", "", where)
            # its result has gone since
            return CellStatus(key, "pending", "its result has been removed: running the sweep again redoes it", where)
    if job:
        if executor == "slurm":
            if job_state and job_state not in SLURM_UNFINISHED:
                tail = _job_log_line(sweep_dir, job)
                return CellStatus(key, "failed", f"its job ended ({job_state}) before the cell started"
                                                 + (f": {tail}" if tail else ""), where)
            return CellStatus(key, "pending", "queued", where, True)
        if executor == "local" and _alive(job, (submission or {}).get("host")):
            return CellStatus(key, "pending", "starting", where, True)
        tail = _job_log_line(sweep_dir, job)
        return CellStatus(key, "failed", "its job ended before the cell started" + (f": {tail}" if tail else ""),
                          where)
    if action == "submitted" and submission is not None and not submission.get("finished") \
            and _alive(submission.get("pid"), submission.get("host")):
        return CellStatus(key, "pending", "queued", None, True)
    if action and action.startswith("skipped"):
        return CellStatus(key, "pending", action, None)
    return CellStatus(key, "pending", "not run: running the sweep again runs it", None)


def statuses(sweep_dir: Path, manifest: dict | None = None) -> tuple[list[CellStatus], CellStatus | None]:
    """(every cell's status, the evaluation classifiers' job's status if there was one)."""
    manifest = manifest if manifest is not None else load(sweep_dir)
    slurm_jobs = sorted({job for sub in manifest.get("submissions", []) if (sub.get("executor") or {}).get(
        "kind") == "slurm" for job in sub.get("jobs", {}).values()})
    slurm = slurm_states(slurm_jobs)
    cells = [cell_status(sweep_dir, key, record, manifest, slurm) for key, record in manifest["cells"].items()]
    evaluators = None
    if _latest(manifest, EVALUATORS_KEY)[2]:
        evaluators = cell_status(sweep_dir, EVALUATORS_KEY, None, manifest, slurm)
    return cells, evaluators


def counts(cells: list[CellStatus]) -> Counter:
    return Counter(c.state for c in cells)


def summary(cells: list[CellStatus]) -> str:
    n = counts(cells)
    return f"{len(cells)} cells: " + ", ".join(f"{n[s]} {s}" for s in STATES)


def table(cells: list[CellStatus], evaluators: CellStatus | None = None) -> str:
    from tabulate import tabulate
    rows = [[c.key, c.state, c.job or "-", c.detail] for c in cells]
    if evaluators is not None:
        rows.insert(0, ["(evaluation classifiers)", evaluators.state, evaluators.job or "-", evaluators.detail])
    return tabulate(rows, headers=["cell", "state", "job", "detail"])


class Progress:
    """A bar of the cells that have ended (done or failed), and a line per cell as it ends."""

    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, desc="sweep", unit="cell", disable=not enabled, dynamic_ncols=True,
                        mininterval=0)
        self.seen: dict[str, str] = {}

    def update(self, cells: list[CellStatus]) -> None:
        for c in cells:
            before = self.seen.get(c.key)
            if before is not None and before != c.state and c.state in ("done", "failed"):
                tqdm.write(f"{c.state}: {c.key}" + (f" ({c.detail})" if c.detail else ""))
            self.seen[c.key] = c.state
        n = counts(cells)
        self.bar.total = len(cells)
        self.bar.n = n["done"] + n["failed"]
        self.bar.set_postfix(done=n["done"], running=n["running"], failed=n["failed"], pending=n["pending"],
                             refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def watch(sweep_dir: Path, poll_s: float, progress: bool) -> tuple[list[CellStatus], CellStatus | None]:
    """Follow the sweep until no cell is running or on its way (queued, requeued)."""
    bar = None
    try:
        while True:
            cells, evaluators = statuses(sweep_dir)
            if bar is None:
                bar = Progress(len(cells), progress)
                bar.seen = {c.key: c.state for c in cells}
            bar.update(cells)
            if not any(c.active for c in cells) and not (evaluators and evaluators.active):
                return cells, evaluators
            time.sleep(poll_s)
    finally:
        if bar is not None:
            bar.close()
