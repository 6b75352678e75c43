"""`cldiff-bench sweep [GRID.toml] [options]` and `cldiff-bench sweep status SWEEP_DIR`.

Heavy modules (torch, submitit) are imported inside the commands: `run`, `leaderboard` and the rest of the command
line work without submitit, which only `sweep` needs (the `cluster` extra).
"""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
from datetime import datetime
from pathlib import Path

from ..commands import CommandSpec
from ..errors import EXIT_INTERRUPTED, UserError

EXECUTOR_FLAGS = ("executor", "parallel", "threads", "partition", "time", "gpus_per_task", "cpus_per_task", "mem_gb",
                  "array_parallelism", "sbatch", "setup", "max_requeues", "signal_delay", "job_name", "python", "poll")
GRID_FLAGS = ("strategies", "streams", "seeds", "profile")
STATUS_FLAGS = ("wait", "poll", "leaderboard", "no_progress")


def add_sweep_arguments(p) -> None:
    from .plan import CellOptions
    cell_options = CellOptions()
    p.add_argument("target", nargs="*", metavar="GRID.toml | status SWEEP_DIR",
                   help="a TOML file of [[grid]] blocks (with [defaults] and [executor] tables), or `status` and a "
                        "sweep directory")
    grid = p.add_argument_group("grid (or a GRID.toml; given here, these apply to every block of the file)")
    grid.add_argument("--strategies", default=None, metavar="A,B", help="comma-separated strategy names")
    grid.add_argument("--streams", default=None, metavar="S,T", help="comma-separated stream names")
    grid.add_argument("--seeds", default=None, metavar="0,1,2", help="comma-separated seeds (default 0)")
    grid.add_argument("--profile", default=None, metavar="P[,Q]", help="profile(s) (default: run's default)")
    ex = p.add_argument_group("executor")
    ex.add_argument("--executor", default=None, choices=["local", "slurm", "debug"],
                    help="local: N cells at a time on this machine (default); slurm: a job array; debug: one cell "
                         "after the other in this process")
    ex.add_argument("--parallel", type=int, default=None, metavar="N",
                    help="local: cells at a time (default: one per GPU, else one per two cores)")
    ex.add_argument("--threads", type=int, default=None, metavar="N",
                    help="threads of each cell (default: local, the cores split between the cells side by side; "
                         "slurm, --cpus-per-task or the cores the job was given)")
    sl = p.add_argument_group("slurm (or an [executor] table in the grid file, with the same names)")
    sl.add_argument("--partition", default=None)
    sl.add_argument("--time", default=None, metavar="MIN",
                    help="time limit of each job, minutes or [D-]HH:MM[:SS] (default 240); a cell whose time runs "
                         "out is requeued and continues from its checkpoint")
    sl.add_argument("--gpus-per-task", type=int, default=None, metavar="N", help="GPUs of each cell (--gpus-per-task)")
    sl.add_argument("--cpus-per-task", type=int, default=None, metavar="N", help="CPUs of each cell (its threads)")
    sl.add_argument("--mem-gb", type=float, default=None, metavar="GB", help="memory of each cell")
    sl.add_argument("--array-parallelism", type=int, default=None, metavar="N",
                    help="cells of the array running at once (default 256)")
    sl.add_argument("--sbatch", action="append", default=None, metavar="KEY=VALUE",
                    help="an extra #SBATCH option, e.g. --sbatch account=myproject --sbatch qos=high (repeatable)")
    sl.add_argument("--setup", action="append", default=None, metavar="LINE",
                    help="a shell line the job runs before the cell, e.g. 'module load cuda' (repeatable)")
    sl.add_argument("--max-requeues", type=int, default=None, metavar="N",
                    help="time-outs after which a cell is requeued (default 3; preemptions do not count)")
    sl.add_argument("--signal-delay", type=int, default=None, metavar="S",
                    help="seconds before the time limit at which the cell is stopped at a checkpoint (default 90)")
    sl.add_argument("--job-name", default=None)
    sl.add_argument("--python", default=None, metavar="COMMAND",
                    help="the jobs' python (default: this one), e.g. for a container")
    sw = p.add_argument_group("sweep")
    sw.add_argument("--sweep-dir", type=Path, default=None, metavar="DIR",
                    help="where the manifest, the logs and the jobs' files go (default OUT/sweeps/NAME)")
    sw.add_argument("--name", default=None, help="the sweep's name (default: the grid file's name, else sweep)")
    sw.add_argument("--wait", action="store_true",
                    help="slurm: follow the cells until they end (local and debug sweeps always do); status: the "
                         "same")
    sw.add_argument("--poll", type=float, default=None, metavar="S",
                    help="seconds between looks at the cells (default 2 locally, 30 on Slurm)")
    sw.add_argument("--leaderboard", type=Path, default=None, metavar="DIR",
                    help="when the cells have ended, build the leaderboard from the results into DIR "
                         "(implies --wait)")
    sw.add_argument("--dry-run", action="store_true", help="show the cells and what would run; run nothing")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar (a line per cell that ends stays)")
    cell_options.add_to(p.add_argument_group("run options (passed to every cell; see `cldiff-bench run --help`)"))
    p.set_defaults(_cell_options=cell_options, _sweep_parser=p)


def sweep_command(args, registry) -> int:
    # A sweep started in the background (`&`, nohup, cron) inherits SIGINT ignored, and so would every job it
    # starts, across exec; submitit stops a local job with SIGINT, so Ctrl-C or SIGTERM would leave its cells
    # running with nobody waiting for them.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    targets = list(args.target)
    if targets and targets[0] == "status":
        if len(targets) != 2:
            raise UserError("usage: cldiff-bench sweep status SWEEP_DIR [--wait] [--leaderboard DIR]")
        extra = [d for d in _given_dests(args) if d not in STATUS_FLAGS]
        if extra:
            raise UserError(f"sweep status takes only --wait, --poll, --leaderboard and --no-progress, not "
                            f"--{extra[0].replace('_', '-')}")
        return _status(Path(targets[1]), args)
    if len(targets) > 1:
        raise UserError(f"sweep takes one grid file, got {len(targets)} arguments ({' '.join(targets)}); `sweep "
                        f"status SWEEP_DIR` shows a sweep")
    return _sweep(args, registry, Path(targets[0]) if targets else None)


def _given_dests(args) -> list[str]:
    parser = args._sweep_parser
    given = []
    for action in parser._actions:
        if not action.option_strings or action.dest == "help" or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value is None or value is False or value == [] or (
                action.default is not argparse.SUPPRESS and value == action.default):
            continue
        given.append(action.dest)
    return given


def _command(args) -> str:
    """The sweep's command line, as given (options in the parser's order)."""
    parts = ["cldiff-bench", *[a for p in args.plugin for a in ("--plugin", p)], "sweep", *args.target]
    actions = {a.dest: a for a in args._sweep_parser._actions if a.option_strings}
    for dest in _given_dests(args):
        action, value = actions[dest], getattr(args, dest)
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            parts.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                parts += [flag, *map(str, item)] if isinstance(item, (list, tuple)) else [flag, str(item)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _cli_axes(args) -> dict:
    from .plan import axes_of
    given = {"strategies": args.strategies, "streams": args.streams, "seeds": args.seeds, "profiles": args.profile}
    return axes_of({k: v for k, v in given.items() if v is not None}, "the command line")


def _sweep(args, registry, grid_file: Path | None) -> int:
    from .executors import executor_options, require_submitit
    from .plan import blocks_from_command_line, read_grid_file

    cell_options = args._cell_options
    cli_options = cell_options.given(args)
    cli_axes = _cli_axes(args)
    cli_executor = {name: getattr(args, "executor" if name == "kind" else name, None)
                    for name in ("kind", *EXECUTOR_FLAGS[1:])}
    cli_executor["sbatch"] = args.sbatch or None
    cli_executor["setup"] = args.setup or None
    if grid_file is not None:
        gf = read_grid_file(grid_file, cell_options, cli_axes, cli_options)
        blocks, table, where = gf.blocks, gf.executor, f"grid file {grid_file} [executor]"
        name = args.name or gf.name or grid_file.stem
        sweep_dir, leaderboard = args.sweep_dir or gf.sweep_dir, args.leaderboard or gf.leaderboard
        main_out = cli_options.get("out") or gf.defaults.get("out")
    else:
        blocks, table, where = blocks_from_command_line(cli_axes, cli_options), {}, "the command line"
        name, sweep_dir, leaderboard = args.name or "sweep", args.sweep_dir, args.leaderboard
        main_out = cli_options.get("out")
    opts = executor_options(table, {"kind": cli_executor.pop("kind"), **cli_executor}, where)
    # What the executor needs is checked before the grid: nothing is planned that cannot be submitted.
    require_submitit()
    if opts.kind == "slurm":
        from .executors import check_slurm
        check_slurm()
    main_out = Path(main_out or "runs").expanduser().absolute()
    from .plan import expand
    cells = expand(blocks, cell_options, registry, main_out, resolve_device=opts.kind != "slurm")
    sweep_dir = Path(sweep_dir or main_out / "sweeps" / name).expanduser().absolute()
    from .plan import Identities
    identities = Identities()
    plan = _plan(cells, identities)
    if args.dry_run:
        return _show_plan(cells, plan, sweep_dir, opts)
    return _submit(args, cells, plan, blocks, sweep_dir, opts, Path(leaderboard) if leaderboard else None,
                   identities)


def _plan(cells: list, identities) -> dict[str, str]:
    """What to do with each cell: submitted, or skipped (and why). A run directory holding another configuration's
    run, or files that are no run, is refused before anything runs (as `run` refuses it)."""
    from ..runlock import lock_path, is_locked
    from .plan import existing
    plan = {}
    for cell in cells:
        holds = existing(cell, identities)
        if holds == "other":
            raise UserError(f"{cell.where}: {cell.run_dir} holds a run of another configuration; give the block "
                            f"another out, or remove that run directory")
        if holds == "foreign":
            raise UserError(f"{cell.where}: {cell.run_dir} is not empty and holds no cldiff-bench run")
        if holds == "done":
            plan[cell.key] = "skipped: done"
        elif is_locked(lock_path(cell.run_dir)):
            plan[cell.key] = "skipped: running in another sweep"
        else:
            plan[cell.key] = "submitted"
    return plan


def _show_plan(cells, plan, sweep_dir: Path, opts) -> int:
    from tabulate import tabulate
    print(tabulate([[c.key, plan[c.key], "cldiff-bench run " + shlex.join(c.argv)] for c in cells],
                   headers=["cell", "plan", "command"]))
    n = sum(1 for c in cells if plan[c.key] == "submitted")
    print(f"{len(cells)} cells, {n} to run with the {opts.kind} executor; sweep directory {sweep_dir} (dry run: "
          f"nothing was run or written)")
    return 0


def _evaluator_commands(cells: list, identities) -> list[list[str]]:
    """`train-evaluator` arguments for the classifiers the cells to run need and do not find in their cache."""
    commands, seen = [], []
    for cell in cells:
        if not cell.evaluates or cell.evaluator_args in seen:
            continue
        seen.append(cell.evaluator_args)
        try:
            from ..evaluation.classifier import classifier_is_cached
            s = cell.settings
            if classifier_is_cached(identities._stream(s), s.eval_settings, s.cache_dir):
                continue
        except Exception:  # noqa: BLE001 (then train-evaluator looks itself)
            pass
        commands.append(cell.evaluator_args)
    return commands


def _submit(args, cells, plan, blocks, sweep_dir: Path, opts, leaderboard: Path | None, identities) -> int:
    from . import manifest as mf
    from .cell import Cell, Evaluators, cores
    from .executors import local_shares, run_debug, run_local, submit_slurm, visible_gpus
    from .status import Progress, statuses, summary, table, watch

    command = _command(args)
    to_run = [c for c in cells if plan[c.key] == "submitted"]
    plugins = tuple(args.plugin)
    description = opts.kind
    threads = opts.threads
    gpus: list[str] = []
    parallel = 1
    if opts.kind == "local":
        if any(c.settings.device.type == "cuda" for c in to_run):
            gpus = visible_gpus()
        parallel, threads = local_shares(opts, cores(), gpus)
        description = (f"local, {parallel} at a time with {threads} thread{'s' if threads > 1 else ''} each on a "
                       f"{cores()}-core machine" + (f" and {len(gpus)} GPU(s)" if gpus else ""))
    elif opts.kind == "slurm":
        threads = opts.threads or opts.cpus_per_task
        description = "slurm job array"
    jobs = [Cell(c.key, c.argv, c.run_dir, sweep_dir, threads=threads, plugins=plugins,
                 in_process=opts.kind == "debug") for c in to_run]
    side_by_side = parallel if opts.kind == "local" else (opts.array_parallelism or 256)
    evaluating = [c for c in to_run if c.evaluates]
    evaluators = None
    if opts.kind != "debug" and len(evaluating) > 1 and side_by_side > 1:
        commands = _evaluator_commands(evaluating, identities)
        if commands:
            evaluators = Evaluators(commands, sweep_dir, plugins)

    records = {c.key: c.record() for c in cells}
    grid = [b.describe(args._cell_options) for b in blocks]
    submission = mf.new_submission(command, {"kind": opts.kind, **opts.to_dict(), "parallel": parallel,
                                             "threads": threads} if opts.kind == "local" else opts.to_dict())
    submission["cells"] = dict(plan)

    def start(m):
        m["grid"] = grid
        m["cells"].update(records)
        m["executor"] = submission["executor"]
        m["submissions"].append(submission)
        submission["index"] = len(m["submissions"]) - 1

    mf.update(sweep_dir, start)
    index = submission["index"]

    def record_jobs(job_ids: dict, evaluators_job: str | None = None):
        def change(m):
            m["submissions"][index]["jobs"].update(job_ids)
            if evaluators_job:
                m["submissions"][index]["evaluators_job"] = evaluators_job
        mf.update(sweep_dir, change)

    skipped = len(cells) - len(to_run)
    print(f"cldiff-bench: sweep {sweep_dir}: {len(cells)} cells, {len(to_run)} to run ({skipped} skipped: done or "
          f"running elsewhere); {description}", file=sys.stderr)
    if not to_run:
        code = None
    elif opts.kind == "slurm":
        job_ids, evaluators_id = submit_slurm(jobs, evaluators, sweep_dir, opts)
        if evaluators_id:
            job_ids = {**job_ids, Evaluators.KEY: evaluators_id}
        record_jobs(job_ids)
        array = next(iter(job_ids.values())).split("_")[0] if job_ids else "-"
        print(f"cldiff-bench: submitted {len(jobs)} cells as Slurm job {array}"
              + (f" (after job {evaluators_id}, the evaluation classifiers)" if evaluators_id else "")
              + f"; follow them with: cldiff-bench sweep status {sweep_dir} --wait", file=sys.stderr)
        if not (args.wait or leaderboard):
            return 0
        code = None
    else:
        bar = Progress(len(cells), not args.no_progress)
        bar.seen = {k: ("done" if v == "skipped: done" else "pending") for k, v in plan.items()}

        def tick():
            bar.update(statuses(sweep_dir)[0])

        try:
            if opts.kind == "local":
                run_local(jobs, evaluators, sweep_dir, opts, parallel, gpus,
                          lambda key, job: record_jobs({key: job}), tick)
            else:
                run_debug(jobs, sweep_dir, lambda key, job: record_jobs({key: job}), tick)
        except KeyboardInterrupt:
            bar.close()
            _finished(sweep_dir, index)
            print(f"cldiff-bench: interrupted: the running cells stopped at a checkpoint; the same command continues "
                  f"the sweep ({sweep_dir})", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            bar.close()
        _finished(sweep_dir, index)
        code = None
    if code is None:
        if opts.kind == "slurm" and to_run:
            cells_status, evaluators_status = watch(sweep_dir, opts.poll_s, not args.no_progress)
        else:
            cells_status, evaluators_status = statuses(sweep_dir)
        print(table(cells_status, evaluators_status))
        print(summary(cells_status), file=sys.stderr)
        code = 1 if any(c.state == "failed" for c in cells_status) else 0
    _finished(sweep_dir, index)
    produced = produced_by(command, mf.load(sweep_dir), len(cells), len(to_run), description)
    outs = sorted({portable_path(c.settings.out) for c in cells})
    _record_provenance(outs, produced)
    if leaderboard is not None:
        code = code or _leaderboard(outs, leaderboard)
    return code


def portable_path(path) -> str:
    """`path` relative to the working directory where it lies below it: what a published page may quote."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def portable_command(command: str) -> str:
    """The sweep command as a reader can re-type it: paths below the working directory made relative, and the data
    folder (a detail of the machine it ran on) written as DATA."""
    parts = shlex.split(command)
    for i in range(1, len(parts)):
        if parts[i - 1] == "--data-root":
            parts[i] = "DATA"
        elif parts[i].startswith("/"):
            parts[i] = portable_path(parts[i])
    return shlex.join(parts)


def produced_by(command: str, manifest: dict, num_cells: int, num_run: int, description: str) -> str:
    """The board's "Results produced by" line: the command, and the wall time of every invocation into this sweep
    directory that ran cells (a sweep resumed after a stop is one sweep), so the page states what the grid cost."""
    ran = [s for s in manifest.get("submissions", [])
           if any(v == "submitted" for v in s.get("cells", {}).values()) and s.get("finished") and s.get("t")]
    walls = [datetime.strptime(s["finished"], "%Y-%m-%dT%H:%M:%S%z").timestamp() - s["t"] for s in ran]
    now = "all run by this invocation" if num_run == num_cells else f"{num_run} run by this invocation"
    total = (f"{len(walls)} invocations into this sweep directory ran cells, {sum(walls) / 60:.0f} min wall together"
             if len(walls) > 1 else f"{sum(walls) / 60:.0f} min wall")
    return f"{portable_command(command)} ({num_cells} cells, {now}; {description}; {total})"


def _finished(sweep_dir: Path, index: int) -> None:
    from . import manifest as mf
    from .manifest import _now

    def change(m):
        m["submissions"][index].setdefault("finished", _now())
    mf.update(sweep_dir, change)


def _has_results(outs: list[str]) -> bool:
    from ..results import RESULT_NAME
    return any(any(Path(o).rglob(RESULT_NAME)) for o in outs if Path(o).is_dir())


def _record_provenance(outs: list[str], produced_by: str) -> None:
    """The sweep's line beside its results (produced-by.txt), where every later build of a board reads it."""
    from ..leaderboard.provenance import record_produced_by
    if _has_results(outs):
        for out in outs:
            record_produced_by(Path(out), produced_by)


def _leaderboard(outs: list[str], output: Path) -> int:
    from ..errors import exit_status
    from ..leaderboard.build import build_leaderboard
    if not _has_results(outs):
        print("cldiff-bench: no results yet: no leaderboard built", file=sys.stderr)
        return 0

    def build() -> int:
        for path in build_leaderboard([Path(o) for o in outs], output):
            print(path)
        return 0
    return exit_status(build)


def _status(sweep_dir: Path, args) -> int:
    from .manifest import load
    from .status import statuses, summary, table, watch
    manifest = load(sweep_dir)
    poll = args.poll if args.poll is not None else (30.0 if (manifest.get("executor") or {}).get(
        "kind") == "slurm" else 2.0)
    if args.wait or args.leaderboard:
        cells, evaluators = watch(sweep_dir, poll, not args.no_progress)
    else:
        cells, evaluators = statuses(sweep_dir, manifest)
    print(table(cells, evaluators))
    print(summary(cells), file=sys.stderr)
    code = 1 if (args.wait or args.leaderboard) and any(c.state == "failed" for c in cells) else 0
    if args.leaderboard:
        outs = sorted({str(Path(r["run_dir"]).parents[3]) for r in manifest["cells"].values()})
        submission = (manifest.get("submissions") or [{}])[-1]
        _record_provenance(outs, submission.get("command", f"cldiff-bench sweep status {sweep_dir}"))
        code = code or _leaderboard(outs, args.leaderboard)
    return code


SWEEP = CommandSpec(
    "sweep", "run a grid of cells (strategies x streams x profiles x seeds) on this machine or as a Slurm job array, "
             "through submitit; finished cells are skipped, unfinished ones continue", add_sweep_arguments,
    sweep_command,
    description="Run every cell of a grid (each one `cldiff-bench run --resume`), or show where a sweep stands "
                "(`cldiff-bench sweep status SWEEP_DIR`). A cell whose run directory holds the result of its "
                "configuration is skipped, so submitting a sweep again runs only what is missing. Exit status: 0 when "
                "no cell failed, 1 when one did, 2 on bad input, 130 when interrupted.")
