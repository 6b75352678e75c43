"""Where a sweep's cells run, through submitit: `local` (N cells at a time on this machine), `slurm` (a job array)
or `debug` (one after the other, in this process)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import UserError
from .files import jobs_dir

EXECUTORS = ("local", "slurm", "debug")
INSTALL_HINT = "pip install 'cldiff-bench[cluster]'"
# A local job has no time limit of its own (submitit's default is 2 minutes): 30 days.
LOCAL_TIMEOUT_MIN = 30 * 24 * 60
SLURM_DEFAULT_TIME_MIN = 240


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError(f"cldiff-bench sweep runs its cells through submitit, which is not installed here: "
                        f"{INSTALL_HINT}") from None
    return submitit


@dataclass
class ExecutorOptions:
    kind: str = "local"
    parallel: int | None = None          # local: cells at a time (default: one per GPU, else one per 2 cores)
    threads: int | None = None           # each cell's threads (local: cores // parallel; slurm: --cpus-per-task)
    partition: str | None = None
    time: int | None = None              # minutes per job (slurm default 240; local: none)
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    array_parallelism: int | None = None
    sbatch: dict = field(default_factory=dict)   # extra #SBATCH lines: {"account": "proj", "exclusive": True}
    setup: list = field(default_factory=list)    # shell lines run by the job before the cell
    max_requeues: int = 3                # time-outs a cell may be requeued after (preemptions are not counted)
    signal_delay: int = 90               # seconds before its time limit that Slurm warns a job
    job_name: str = "cldiff-bench"
    python: str | None = None            # the jobs' python command (default: this interpreter)
    poll: float | None = None            # seconds between looks at the cells (default: 2 local, 30 slurm)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, [], {})}

    @property
    def poll_s(self) -> float:
        return self.poll if self.poll is not None else (30.0 if self.kind == "slurm" else 2.0)


OPTION_KEYS = {f.replace("_", "-"): f for f in ExecutorOptions.__dataclass_fields__} | {"executor": "kind"}


def minutes(value, where: str) -> int:
    """Minutes from an integer or a Slurm-style [D-]HH:MM[:SS] string."""
    if isinstance(value, int) and not isinstance(value, bool):
        total = value
    elif isinstance(value, str) and re.fullmatch(r"\d+", value.strip()):
        total = int(value)
    elif isinstance(value, str) and (m := re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+)(?::(\d+))?", value.strip())):
        days, hours, mins, secs = (int(g) if g else 0 for g in m.groups())
        total = days * 1440 + hours * 60 + mins + (1 if secs else 0)
    else:
        raise UserError(f"{where}: time must be minutes or [D-]HH:MM[:SS], got {value!r}")
    if total < 1:
        raise UserError(f"{where}: time must be at least a minute, got {value!r}")
    return total


def sbatch_lines(items, where: str) -> dict:
    """Extra sbatch options from KEY=VALUE strings (or --KEY=VALUE, or a bare flag) or a TOML table."""
    if isinstance(items, dict):
        return {str(k).lstrip("-"): v for k, v in items.items()}
    if isinstance(items, str):
        items = [items]
    out = {}
    for item in items or []:
        if not isinstance(item, str):
            raise UserError(f"{where}: sbatch options are KEY=VALUE strings, got {item!r}")
        key, sep, value = item.strip().lstrip("-").partition("=")
        if not key:
            raise UserError(f"{where}: bad sbatch option {item!r} (expected KEY=VALUE, e.g. account=myproject)")
        out[key] = value if sep else True
    return out


def executor_options(table: dict, cli: dict, where: str) -> ExecutorOptions:
    """Options from the grid file's [executor] table, overridden by the command line's (None: not given)."""
    values: dict = {}
    for key, value in table.items():
        name = OPTION_KEYS.get(str(key)) or OPTION_KEYS.get(str(key).replace("_", "-"))
        if name is None:
            raise UserError(f"{where}: unknown [executor] key {key!r} (known: {', '.join(sorted(OPTION_KEYS))})")
        values[name] = value
    values.update({k: v for k, v in cli.items() if v is not None and v != []})
    opts = ExecutorOptions()
    for name, value in values.items():
        setattr(opts, name, value)
    if opts.kind not in EXECUTORS:
        raise UserError(f"{where}: unknown executor {opts.kind!r} (known: {', '.join(EXECUTORS)})")
    for name in ("parallel", "threads", "gpus_per_task", "cpus_per_task", "array_parallelism"):
        value = getattr(opts, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < (
                0 if name == "gpus_per_task" else 1)):
            raise UserError(f"{where}: {name.replace('_', '-')} must be a positive integer, got {value!r}")
    for name in ("max_requeues", "signal_delay"):
        value = getattr(opts, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserError(f"{where}: {name.replace('_', '-')} must be a non-negative integer, got {value!r}")
    if opts.poll is not None and (not isinstance(opts.poll, (int, float)) or opts.poll <= 0):
        raise UserError(f"{where}: poll must be a positive number of seconds, got {opts.poll!r}")
    if opts.mem_gb is not None and (not isinstance(opts.mem_gb, (int, float)) or opts.mem_gb <= 0):
        raise UserError(f"{where}: mem-gb must be a positive number, got {opts.mem_gb!r}")
    if opts.time is not None:
        opts.time = minutes(opts.time, where)
    opts.sbatch = sbatch_lines(opts.sbatch, where)
    if isinstance(opts.setup, str):
        opts.setup = [opts.setup]
    if not isinstance(opts.setup, list) or not all(isinstance(s, str) for s in opts.setup):
        raise UserError(f"{where}: setup must be a list of shell lines")
    return opts


# --- slurm --------------------------------------------------------------------------------------------------------

def check_slurm() -> None:
    require_submitit()
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise UserError(f"--executor slurm submits with sbatch and runs with srun, and {' and '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not on PATH here (submit from the cluster's login "
                        f"node)")


def slurm_parameters(opts: ExecutorOptions) -> dict:
    params = {"job_name": opts.job_name, "time": opts.time or SLURM_DEFAULT_TIME_MIN,
              "signal_delay_s": opts.signal_delay, "stderr_to_stdout": True}
    for name in ("partition", "gpus_per_task", "cpus_per_task", "array_parallelism"):
        if getattr(opts, name) is not None:
            params[name] = getattr(opts, name)
    if opts.mem_gb is not None:
        params["mem"] = f"{int(opts.mem_gb)}GB" if opts.mem_gb == int(opts.mem_gb) else f"{int(opts.mem_gb * 1024)}MB"
    if opts.sbatch:
        params["additional_parameters"] = dict(opts.sbatch)
    if opts.setup:
        params["setup"] = list(opts.setup)
    return params


def slurm_executor(sweep_dir: Path, opts: ExecutorOptions):
    submitit = require_submitit()
    executor = submitit.SlurmExecutor(folder=jobs_dir(sweep_dir), max_num_timeout=opts.max_requeues,
                                      python=opts.python)
    try:
        executor.update_parameters(**slurm_parameters(opts))
    except ValueError as exc:
        raise UserError(f"bad Slurm option: {' '.join(str(exc).split())}") from None
    return executor


def submit_slurm(cells: list, evaluators, sweep_dir: Path, opts: ExecutorOptions) -> tuple[dict, str | None]:
    """Submit the cells as one job array (after the evaluators' job, if any): (job id per cell key, that job's)."""
    check_slurm()
    executor = slurm_executor(sweep_dir, opts)
    evaluators_id = None
    if evaluators is not None:
        evaluators_id = executor.submit(evaluators).job_id
        # afterany: should the classifiers' job fail, every cell still runs (and says why in its log).
        executor.update_parameters(dependency=f"afterany:{evaluators_id}")
    with executor.batch():
        jobs = [executor.submit(cell) for cell in cells]
    return {cell.key: job.job_id for cell, job in zip(cells, jobs)}, evaluators_id


# --- local --------------------------------------------------------------------------------------------------------

def visible_gpus() -> list[str]:
    """The GPUs this process sees, as CUDA_VISIBLE_DEVICES entries (each cell gets one)."""
    import torch
    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [e.strip() for e in listed.split(",") if e.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def local_shares(opts: ExecutorOptions, n_cores: int, gpus: list[str]) -> tuple[int, int]:
    """(cells at a time, threads per cell): by default one cell per GPU, else one per two cores, and the cores
    split between the cells side by side."""
    parallel = opts.parallel or (len(gpus) if gpus else max(1, n_cores // 2))
    threads = opts.threads or max(1, n_cores // parallel)
    return parallel, threads


def run_local(cells: list, evaluators, sweep_dir: Path, opts: ExecutorOptions, parallel: int, gpus: list[str],
              on_submit: Callable[[str, str], None], on_tick: Callable[[], None]) -> None:
    """Run the cells `parallel` at a time, each in a submitit local job; returns when all have ended."""
    submitit = require_submitit()
    executor = submitit.LocalExecutor(folder=jobs_dir(sweep_dir))
    # The job's process hides every GPU (CUDA_VISIBLE_DEVICES="") unless asked for some: the cells set their own.
    executor.update_parameters(timeout_min=opts.time or LOCAL_TIMEOUT_MIN, signal_delay_s=opts.signal_delay,
                               stderr_to_stdout=True, gpus_per_node=0)
    cuda_visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    running: dict[int, tuple] = {}
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if evaluators is not None:
            evaluators.env["CUDA_VISIBLE_DEVICES"] = gpus[0] if gpus else cuda_visible
            job = executor.submit(evaluators)
            on_submit(evaluators.key, job.job_id)
            running[0] = (evaluators, job)
            _wait_all(running, opts.poll_s, on_tick)
        queue = list(cells)
        while queue or running:
            for slot in range(parallel):
                if slot in running or not queue:
                    continue
                cell = queue.pop(0)
                cell.env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)] if gpus else cuda_visible
                job = executor.submit(cell)
                on_submit(cell.key, job.job_id)
                running[slot] = (cell, job)
            on_tick()
            time.sleep(opts.poll_s)
            for slot, (cell, job) in list(running.items()):
                if job.done():
                    del running[slot]
        on_tick()
    except KeyboardInterrupt:
        for _, job in running.values():
            job.cancel(check=False)  # the job's run stops at a checkpoint
        _wait_for_locks([cell for cell, _ in running.values()])
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _wait_all(running: dict, poll_s: float, on_tick) -> None:
    while running:
        on_tick()
        time.sleep(poll_s)
        for slot, (_, job) in list(running.items()):
            if job.done():
                del running[slot]


def _wait_for_locks(jobs: list, timeout_s: float = 90) -> None:
    """Wait (a while) for the cancelled cells' runs to write their checkpoints and let go of their cells."""
    from ..runlock import lock_path, is_locked
    locks = [lock_path(Path(c.run_dir)) for c in jobs if hasattr(c, "run_dir")]
    deadline = time.time() + timeout_s
    while time.time() < deadline and any(is_locked(p) for p in locks):
        time.sleep(0.5)


# --- debug --------------------------------------------------------------------------------------------------------

def run_debug(cells: list, sweep_dir: Path, on_submit: Callable[[str, str], None],
              on_tick: Callable[[], None]) -> None:
    """One cell after the other in this process (submitit's DebugExecutor: a crash opens a debugger)."""
    submitit = require_submitit()
    executor = submitit.DebugExecutor(folder=jobs_dir(sweep_dir))
    for cell in cells:
        job = executor.submit(cell)
        on_submit(cell.key, job.job_id)
        on_tick()
        job.result()
    on_tick()
