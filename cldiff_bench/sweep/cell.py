"""One cell of a sweep as a submitit job: lock the cell, run `cldiff-bench run --resume` for it, record how it
went. A `Checkpointable`: when Slurm preempts the job or its time runs out, submitit calls `checkpoint()`, which
stops the run (it writes a checkpoint and exits), and requeues the job, which continues the run from there.

Local and Slurm cells run `cldiff-bench run` in a subprocess: the run gets its own thread count and its own
signal handlers (the job's process keeps submitit's), and whatever the run does to its process stays there.
The debug executor runs the cell in-process, which is what debug means: one process, a debugger on a crash.

Imported by the jobs' processes, so it imports nothing heavy (no torch).
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import submitit

from ..errors import EXIT_INTERRUPTED
from ..runlock import HELD_LOCK_ENV, RunLock, lock_holder, lock_path
from .files import log_path, state_path, write_json

# Seconds a stopped run has to write its checkpoint and exit, before it is killed (the run then continues from its
# previous checkpoint). Slurm's warning comes `signal_delay_s` (90 s by default) before the end of a job.
STOP_TIMEOUT_S = 60
# After a run stopped on a signal of its own, how long to wait for the job's own signal (preemption's or the time
# limit's), which requeues the job, before the cell is recorded as interrupted.
REQUEUE_GRACE_S = 15


class CellFailed(RuntimeError):
    """The cell's run failed (or stopped): the job fails too, so the cluster's accounting shows it."""


def cores() -> int:
    """The cores this process may use (a Slurm job's allocation, a taskset), not the machine's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _job_id() -> str | None:
    try:
        return submitit.JobEnvironment().job_id
    except Exception:  # noqa: BLE001 (not inside a submitit job)
        return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class _Job(submitit.helpers.Checkpointable):
    """What a cell and the evaluators' job share: a log, a state file, an attempt count."""

    def __init__(self, key: str, sweep_dir: Path, plugins: tuple[str, ...] = (), in_process: bool = False,
                 env: dict | None = None):
        self.key = key
        self.sweep_dir = str(Path(sweep_dir).absolute())
        self.plugins = tuple(plugins)
        self.in_process = in_process
        self.env = dict(env or {})
        self.attempts = 0
        self.requeues = 0
        self._reset()

    def _reset(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._stopping = False

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_proc", None)
        state.pop("_stopping", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def log_path(self) -> Path:
        return log_path(Path(self.sweep_dir), self.key)

    @property
    def state_path(self) -> Path:
        return state_path(Path(self.sweep_dir), self.key)

    def _record(self, state: str, **extra) -> None:
        write_json(self.state_path, {"cell": self.key, "state": state, "attempt": self.attempts,
                                     "requeues": self.requeues, "job_id": _job_id(), "host": socket.gethostname(),
                                     "pid": os.getpid(), "time": _now(), "t": time.time(), "log": str(self.log_path),
                                     **extra})

    def _plugin_args(self) -> list[str]:
        return [a for p in self.plugins for a in ("--plugin", p)]

    def _execute(self, args: list[str], threads: int | None, lock: RunLock | None = None) -> int:
        """`cldiff-bench ARGS`, its output appended to the log; its exit status. The run inherits `lock`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a") as log:
            log.write(f"--- {_now()} attempt {self.attempts} on {socket.gethostname()} (job {_job_id()}): "
                      f"cldiff-bench {shlex.join(args)}\n")
            log.flush()
            if self.in_process:
                return self._execute_in_process(args, log)
            env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
            if lock is not None:
                env[HELD_LOCK_ENV] = str(lock.path.resolve())
            if threads:
                env["OMP_NUM_THREADS"] = str(threads)
            self._proc = subprocess.Popen([sys.executable, "-m", "cldiff_bench.cli", *args], stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                          pass_fds=() if lock is None else (lock.fd,),
                                          preexec_fn=_stop_with_parent(os.getpid()))
            try:
                return self._wait_for_run()
            except KeyboardInterrupt:  # the job was cancelled: the run stops at a checkpoint, then so do we
                self._stop_run()
                self._record("interrupted", returncode=self._proc.returncode)
                raise

    def _execute_in_process(self, args: list[str], log) -> int:
        from ..errors import exit_status
        name, argv = args[len(self._plugin_args())], args[len(self._plugin_args()) + 1:]
        tee_out, tee_err = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
        with contextlib.redirect_stdout(tee_out), contextlib.redirect_stderr(tee_err):
            try:
                return exit_status(lambda: _command_in_process(self.plugins, name, argv))
            except Exception:
                traceback.print_exc()
                self._record("failed", returncode=None, last_line=traceback.format_exc().strip().splitlines()[-1])
                raise  # a debugger's post-mortem (the debug executor's) sees the run's own frames

    def _wait_for_run(self, timeout_s: float | None = None) -> int | None:
        """The run's exit status (None if it is still running after `timeout_s`). Polled, never a blocking wait:
        submitit's signal handler, which stops the run and waits for it in `checkpoint()`, runs on top of this
        wait, and a blocking `Popen.wait` holds a lock that the handler's own wait would then never get."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            returncode = self._proc.poll()
            if returncode is not None or (deadline is not None and time.monotonic() > deadline):
                return returncode
            time.sleep(0.2)

    def _stop_run(self) -> None:
        """Ask the run to stop (it finishes its iteration, writes a checkpoint and exits 130), and wait for it."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        if self._wait_for_run(STOP_TIMEOUT_S) is None:
            proc.kill()
            self._wait_for_run(10)

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Called by submitit when the job is preempted or about to time out: stop the run at a checkpoint and
        hand back the cell to requeue, which continues the run from it (`run --resume`)."""
        self._stopping = True
        self._stop_run()
        self.requeues += 1
        self._record("requeued", returncode=None if self._proc is None else self._proc.returncode)
        return submitit.helpers.DelayedSubmission(copy.copy(self), *args, **kwargs)


def _command_in_process(plugins: tuple[str, ...], name: str, argv: list[str]) -> int:
    """`cldiff-bench NAME ARGV` in this process, through the registered command, as the command line runs it."""
    from ..commands import command_parser
    from ..registry import load_registry
    registry = load_registry(plugins)
    command = registry.command(name)
    try:
        parsed = command_parser(command).parse_args(argv)
    except SystemExit as exc:  # a bad argument, already printed as one line
        return exc.code if isinstance(exc.code, int) else 2
    return command.run(parsed, registry)


PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent_pid: int):
    """For Popen's preexec_fn on Linux: the run gets SIGTERM (it stops at a checkpoint) when the job's process dies
    before it. A scheduler that kills the job outright (submitit's local controller does, a second after its SIGINT;
    an OOM killer) would otherwise leave the run going on as an orphan, training a cell that no job holds."""
    if not sys.platform.startswith("linux"):
        return None
    try:  # looked up before the fork: the child only makes the call
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec():
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the job died before the line above: nobody will send the signal
            os.kill(os.getpid(), signal.SIGTERM)
    return preexec


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()

    def isatty(self):
        return False


class Cell(_Job):
    """One (strategy, stream, profile, seed) run of a sweep."""

    def __init__(self, key: str, run_argv: list[str], run_dir: Path, sweep_dir: Path, threads: int | None = None,
                 plugins: tuple[str, ...] = (), in_process: bool = False, env: dict | None = None):
        super().__init__(key, sweep_dir, plugins, in_process, env)
        self.run_argv = list(run_argv)
        self.run_dir = str(Path(run_dir).absolute())
        self.threads = threads

    def command(self, threads: int | None = None) -> list[str]:
        """The `cldiff-bench` arguments that run this cell."""
        threads = threads or self.threads
        return [*self._plugin_args(), "run", *self.run_argv, *(["--threads", str(threads)] if threads else [])]

    def __call__(self) -> dict:
        self._reset()
        self.attempts += 1
        lock = RunLock(lock_path(Path(self.run_dir)))
        holder = {"cell": self.key, "sweep_dir": self.sweep_dir, "job_id": _job_id(), "host": socket.gethostname(),
                  "pid": os.getpid(), "since": _now()}
        if not lock.acquire(holder):
            other = lock_holder(lock.path)
            self._record("locked", locked_by=other)
            return {"cell": self.key, "state": "locked", "locked_by": other}
        # On a requeue, submitit's signal handler (checkpoint, then requeue, then exit) runs inside the wait below:
        # its SystemExit passes through here, and the lock is released on the way out.
        try:
            # Not forced on in-process cells: there the sweep's own thread count is the run's.
            threads = self.threads or (None if self.in_process else cores())
            self._record("running", threads=threads)
            returncode = self._execute(self.command(threads), threads, lock)
        finally:
            lock.release()
        return self._finish(returncode)

    def _finish(self, returncode: int) -> dict:
        from .files import last_line
        line = last_line(self.log_path)
        if returncode == 0:
            self._record("done", returncode=0, last_line=line)
            return {"cell": self.key, "state": "done", "result": str(Path(self.run_dir) / "result.json")}
        if returncode == EXIT_INTERRUPTED:
            if self._stopping:  # checkpoint() stopped it: the requeued cell continues
                return {"cell": self.key, "state": "requeued"}
            deadline = time.time() + (0 if self.in_process else REQUEUE_GRACE_S)
            while time.time() < deadline and not self._stopping:
                time.sleep(0.5)  # the job's own signal, if one is coming, requeues the job (and exits) from here
            if self._stopping:
                return {"cell": self.key, "state": "requeued"}
            self._record("interrupted", returncode=returncode, last_line=line)
            message = f"{self.key}: the run was interrupted ({line}); running the sweep again continues it"
        else:
            how = f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit status {returncode}"
            self._record("failed", returncode=returncode, last_line=line)
            message = f"{self.key}: the run failed ({how}): {line}"
        if self.in_process:  # the debug executor would open a debugger on our exception, not the run's
            return {"cell": self.key, "state": "failed", "message": message}
        raise CellFailed(message)


class Evaluators(_Job):
    """The evaluation classifiers the cells need, trained once before them (`cldiff-bench train-evaluator`), so
    that cells side by side do not each train the same one. Cached classifiers are loaded, not trained again."""

    KEY = "_evaluators"

    def __init__(self, commands: list[list[str]], sweep_dir: Path, plugins: tuple[str, ...] = (),
                 in_process: bool = False, env: dict | None = None):
        super().__init__(self.KEY, sweep_dir, plugins, in_process, env)
        self.commands = [list(c) for c in commands]

    def __call__(self) -> dict:
        self._reset()
        self.attempts += 1
        self._record("running")
        for command in self.commands:
            returncode = self._execute([*self._plugin_args(), "train-evaluator", *command], None)
            if returncode != 0:
                from .files import last_line
                line = last_line(self.log_path)
                self._record("failed", returncode=returncode, last_line=line)
                # Not fatal: each cell then trains (or fails on) its classifier itself, and says so in its log.
                return {"cell": self.key, "state": "failed", "message": line}
        self._record("done", returncode=0)
        return {"cell": self.key, "state": "done"}
