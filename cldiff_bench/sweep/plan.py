"""A sweep's grid: blocks (from the command line or a TOML file's `[[grid]]` tables) expanded into cells.

Every cell is one `cldiff-bench run` with the run's own identity: its run directory
(`<out>/<stream>/<profile>/<strategy>/seed<N>`) and the hash of its resolved configuration, as `run` computes them
(settings.resolve_settings, context.RunContext.resolved_config, rundir.config_hash). A cell whose directory holds
the result of that configuration is done and is not run again.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..arguments import comma_separated_ints
from ..errors import UserError
from ..run_arguments import PATH_DESTS, RUN_ARGUMENTS, RunArgument, run_config_from_args

# What a sweep sets for each of its cells: no progress bars, --resume always (a requeued cell continues), its own
# thread share (given to the command, not the configuration), and never --force.
CELL = {"progress": False, "resume": True, "force": False, "threads": None}

AXES = {"strategies": "strategies", "strategy": "strategies", "streams": "streams", "stream": "streams",
        "seeds": "seeds", "seed": "seeds", "profiles": "profiles", "profile": "profiles"}
TOP_LEVEL_KEYS = {"name", "sweep-dir", "leaderboard", "defaults", "executor", "grid"}


class _ParseError(Exception):
    pass


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message):
        raise _ParseError(message)


class CellOptions:
    """The run arguments a sweep passes on to its cells (all of run_arguments.RUN_ARGUMENTS but those it sets for
    each cell itself): read from its command line and its TOML tables (by their long names, e.g.
    `num-generated = 40`), merged, and written back as `run` arguments."""

    def __init__(self):
        self.arguments = [a for a in RUN_ARGUMENTS if a.per_cell]
        self.by_key = {a.flag[2:]: a for a in self.arguments}
        self.by_key["options"] = self.by_key["option"]
        self._partial = _RaisingParser(prog="run options", add_help=False)
        self.add_to(self._partial)

    def add_to(self, group) -> None:
        """Add the run options to a sweep's parser: only those given end up in its namespace."""
        for argument in self.arguments:
            argument.add_to(group, suppress_default=True)

    def given(self, namespace: argparse.Namespace) -> dict:
        return {a.dest: getattr(namespace, a.dest) for a in self.arguments if hasattr(namespace, a.dest)}

    def from_table(self, table: dict, where: str) -> dict:
        argv: list[str] = []
        for key, value in table.items():
            argument = self.by_key.get(key) or self.by_key.get(str(key).replace("_", "-"))
            if argument is None:
                import difflib
                close = difflib.get_close_matches(str(key), list(self.by_key) + list(AXES), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(f"{where}: unknown key {key!r}{hint}; a block takes strategies, streams, seeds, "
                                f"profile and the options of `cldiff-bench run` by their long names")
            argv += _table_argv(argument, key, value, where)
        try:
            return vars(self._partial.parse_args(argv))
        except _ParseError as exc:
            raise UserError(f"{where}: {exc}") from None

    def merge(self, *partials: dict) -> dict:
        merged: dict = {}
        for partial in partials:
            for dest, value in partial.items():
                if dest == "option" and dest in merged:
                    pairs = {k.replace("-", "_"): [k, v] for k, v in merged[dest]}
                    pairs.update({k.replace("-", "_"): [k, v] for k, v in value})
                    value = list(pairs.values())
                merged[dest] = value
        return merged

    def namespace(self, partial: dict) -> argparse.Namespace:
        """Every run argument's destination: the given ones, the others at their defaults."""
        return argparse.Namespace(**{**{a.dest: a.default_value for a in RUN_ARGUMENTS}, **partial})

    def to_argv(self, partial: dict) -> list[str]:
        return [arg for a in self.arguments if a.dest in partial for arg in a.to_argv(partial[a.dest])]


def _scalar(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _table_argv(argument: RunArgument, key: str, value, where: str) -> list[str]:
    if argument.kind == "switch":
        if not isinstance(value, bool):
            raise UserError(f"{where}: {key} must be true or false, got {value!r}")
        return argument.to_argv(value)
    if argument.kind == "pairs":
        if not isinstance(value, dict):
            raise UserError(f"{where}: {key} must be a table of strategy options, e.g. {key} = {{lambda = 0.5}}")
        return argument.to_argv([(k, _scalar(v)) for k, v in value.items()])
    if isinstance(value, (bool, list, dict)):
        raise UserError(f"{where}: {key} takes one value, got {value!r}")
    return argument.to_argv(value)


def _names(value, key: str, where: str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise UserError(f"{where}: {key} must be a list of names (or one comma-separated string), got {value!r}")
    names = [s.strip() for s in items]
    if names == [""]:
        return []  # nothing given: the caller says which axis is empty
    if not all(names):
        raise UserError(f"{where}: {key} has an empty name: {value!r}")
    return names


def _seed_list(value, where: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str):
        try:
            value = comma_separated_ints(value, "seeds")
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise UserError(f"{where}: seeds must be a list of integers, got {value!r}")
    if any(s < 0 for s in value):
        raise UserError(f"{where}: seeds must be non-negative, got {value}")
    return value


@dataclass
class Block:
    """One block of the grid: every strategy x stream x profile x seed, with the same run options."""
    where: str
    name: str | None
    axes: dict[str, list]   # strategies, streams, profiles: names; seeds: integers
    options: dict           # run options given (destination -> value), merged from the file and the command line

    def describe(self, cell_options: CellOptions) -> dict:
        return {"block": self.where, "name": self.name, **self.axes, "cell_options": cell_options.to_argv(self.options)}


def axes_of(table: dict, where: str) -> dict[str, list]:
    axes: dict[str, list] = {}
    for key, value in table.items():
        axis = AXES[key]
        if axis in axes:
            raise UserError(f"{where}: {axis} given twice ({key!r} and another spelling)")
        axes[axis] = _seed_list(value, where) if axis == "seeds" else _names(value, key, where)
    return axes


def blocks_from_command_line(cli_axes: dict[str, list], cli_options: dict) -> list[Block]:
    where = "the command line"
    if "strategies" not in cli_axes or "streams" not in cli_axes:
        raise UserError("no grid: give --strategies and --streams (and --seeds, --profile), or a GRID.toml file "
                        "with [[grid]] blocks")
    return [Block(where, None, _complete(dict(cli_axes), where), cli_options)]


def _complete(axes: dict, where: str) -> dict:
    from ..profiles import DEFAULT_PROFILE
    axes.setdefault("seeds", [0])
    axes.setdefault("profiles", [DEFAULT_PROFILE])
    for axis in ("strategies", "streams"):
        if axis not in axes:
            raise UserError(f"{where}: no {axis}")
    for axis in ("strategies", "streams", "seeds", "profiles"):
        if not axes[axis]:
            raise UserError(f"{where}: {axis} is empty, so the block has no cells")
    return {k: axes[k] for k in ("strategies", "streams", "seeds", "profiles")}


@dataclass
class GridFile:
    path: Path
    name: str | None
    sweep_dir: str | None
    leaderboard: str | None
    executor: dict
    blocks: list[Block]
    defaults: dict = field(default_factory=dict)


def read_grid_file(path: Path, cell_options: CellOptions, cli_axes: dict, cli_options: dict) -> GridFile:
    """The blocks of a TOML grid file; options on the command line apply to every block and win over the file's."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read the grid file {path}: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"grid file {path}: not valid TOML ({' '.join(str(exc).split())})") from None
    unknown = sorted(set(doc) - TOP_LEVEL_KEYS)
    if unknown:
        raise UserError(f"grid file {path}: unknown top-level key(s) {', '.join(map(repr, unknown))} (known: "
                        f"{', '.join(sorted(TOP_LEVEL_KEYS))}; run options go in [defaults] or a [[grid]] block)")
    for key in ("name", "sweep-dir", "leaderboard"):
        if key in doc and not isinstance(doc[key], str):
            raise UserError(f"grid file {path}: {key} must be a string, got {doc[key]!r}")
    for key in ("defaults", "executor"):
        if key in doc and not isinstance(doc[key], dict):
            raise UserError(f"grid file {path}: [{key}] must be a table")
    grid = doc.get("grid", [])
    if not isinstance(grid, list) or not all(isinstance(b, dict) for b in grid):
        raise UserError(f"grid file {path}: 'grid' must be an array of tables ([[grid]])")
    if not grid:
        raise UserError(f"grid file {path}: no [[grid]] blocks, so the grid has no cells")

    def split(table: dict, where: str) -> tuple[dict, dict]:
        axes = axes_of({k: v for k, v in table.items() if k in AXES}, where)
        rest = {k: v for k, v in table.items() if k not in AXES and k != "name"}
        return axes, cell_options.from_table(rest, where)

    default_axes, default_options = split(doc.get("defaults", {}), f"{path} [defaults]")
    blocks = []
    for i, table in enumerate(grid, 1):
        name = table.get("name")
        if name is not None and not isinstance(name, str):
            raise UserError(f"{path} [[grid]] {i}: name must be a string")
        where = f"{path} [[grid]] {i}" + (f" ({name})" if name else "")
        axes, options = split(table, where)
        axes = _complete({**default_axes, **axes, **cli_axes}, where)
        blocks.append(Block(where, name, axes, cell_options.merge(default_options, options, cli_options)))
    return GridFile(path, doc.get("name"), doc.get("sweep-dir"), doc.get("leaderboard"),
                    dict(doc.get("executor", {})), blocks, default_options)


# --- cells ------------------------------------------------------------------------------------------------------

@dataclass
class CellSpec:
    key: str                # the run directory below the sweep's output folder, e.g. digits-5/tiny/gd/seed0
    where: str              # the grid block it comes from
    strategy: str
    stream: str
    profile: str
    seed: int
    run_dir: Path
    argv: list[str]         # `cldiff-bench run` arguments (the thread count is added per executor)
    evaluates: bool
    settings: Any = field(repr=False, default=None)   # its RunSettings (not recorded)
    config_hash: str | None = None                     # known when the run directory already holds its config
    evaluator_args: list[str] = field(default_factory=list)  # `train-evaluator` arguments of its classifier

    def record(self) -> dict:
        return {"key": self.key, "block": self.where, "strategy": self.strategy, "stream": self.stream,
                "profile": self.profile, "seed": self.seed, "run_dir": str(self.run_dir),
                "command": "cldiff-bench run " + " ".join(_quote(a) for a in self.argv),
                "argv": self.argv, "config_hash": self.config_hash}


def _quote(arg: str) -> str:
    import shlex
    return shlex.quote(arg)


def expand(blocks: list[Block], cell_options: CellOptions, registry, main_out: Path,
           resolve_device: bool = True) -> list[CellSpec]:
    """Every cell of every block, checked as `run` checks it (names, options, budget) before anything runs.
    Seeds outer, strategies inner, in the order given: list the costliest strategies first so that cells run side
    by side take about as long as each other. `resolve_device=False` checks the cells as if on a CPU (a login node
    without the GPUs the jobs will have)."""
    from ..settings import resolve_settings
    cells: dict[Path, CellSpec] = {}
    for block in blocks:
        where = block.where
        for name in block.axes["strategies"]:
            _check(lambda: registry.strategy(name), where)
        for name in block.axes["streams"]:
            _check(lambda: registry.stream(name), where)
        options = dict(block.options)
        for dest in PATH_DESTS:
            if options.get(dest) is not None:
                options[dest] = str(Path(options[dest]).expanduser().absolute())
        namespace = cell_options.namespace(options)
        if "out" not in options:
            namespace.out = options["out"] = str(Path(namespace.out).expanduser().absolute())
        base_argv = cell_options.to_argv(options)
        # What `train-evaluator` needs to find (or train) the same classifier as the cells: as the cells get it.
        evaluator_argv = cell_options.to_argv({k: v for k, v in options.items()
                                              if k in ("data_root", "cache_dir", "device", "classifier_weights")})
        for stream in block.axes["streams"]:
            for profile in block.axes["profiles"]:
                for seed in block.axes["seeds"]:
                    for strategy in block.axes["strategies"]:
                        cfg = _check(lambda: run_config_from_args(namespace, strategy, stream, seed, profile, **CELL), where)
                        if not resolve_device and cfg.device != "cpu":
                            cfg.device = "cpu"
                        # bf16 on a CPU warns once per cell: the warning is the run's to give, not the plan's
                        with contextlib.redirect_stderr(io.StringIO()):
                            settings = _check(lambda: resolve_settings(cfg, registry), where)
                        run_dir = Path(settings.run_dir)
                        argv = ["--strategy", strategy, "--stream", stream, "--seed", str(seed), "--profile",
                                profile, *base_argv, "--resume", "--no-progress"]
                        try:
                            key = str(run_dir.relative_to(main_out))
                        except ValueError:
                            key = str(run_dir)
                        cell = CellSpec(key, where, strategy, stream, profile, seed, run_dir, argv,
                                        settings.evaluate, settings,
                                        evaluator_args=["--stream", stream, "--profile", profile, *evaluator_argv,
                                                        "--no-progress"])
                        other = cells.get(run_dir)
                        if other is not None:
                            if other.argv != argv:
                                raise UserError(f"{where} and {other.where} both make {key} with different "
                                                f"options; give one of them its own out")
                            continue
                        cells[run_dir] = cell
    if not cells:
        raise UserError("the grid has no cells")
    return list(cells.values())


def _check(fn, where: str):
    try:
        return fn()
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


# --- identity of a cell that has a run directory ----------------------------------------------------------------

class Identities:
    """Config hashes of cells, computed as `run` computes them, with the streams built once per seed."""

    def __init__(self):
        self._streams: dict = {}

    def config_hash(self, settings) -> str | None:
        """The hash `run` would record for these settings; None when it cannot be had here (then the run itself
        decides whether its directory is done, at no harm)."""
        try:
            from types import SimpleNamespace

            from ..context import RunContext
            from ..diffusion.schedule import NoiseSchedule
            from ..diffusion.unet import model_config
            from ..rundir import config_hash
            stream = self._stream(settings)
            unet = model_config(settings.budget.model, settings.model_preset, stream.image_shape[0])
            # The parts of a RunContext that the resolved configuration reads, without a U-Net or an evaluator.
            context = RunContext(settings, stream, unet, meter=None, core=SimpleNamespace(schedule=NoiseSchedule()),
                                 strategy=None, evaluator=None)
            return config_hash(context.resolved_config())
        except Exception:  # noqa: BLE001 (a best effort: see the docstring)
            return None

    def _stream(self, settings):
        key = (settings.stream, settings.seed, str(settings.data_root), str(settings.cache_dir),
               settings.budget.image_size)
        if key not in self._streams:
            spec = settings.stream_spec
            self._streams[key] = spec.build(settings.data_root, settings.seed, settings.cache_dir).at_size(
                settings.budget.image_size)
        return self._streams[key]


def existing(cell: CellSpec, identities: Identities) -> str:
    """What the cell's run directory holds: new, done, partial (a checkpoint or nothing yet of this configuration),
    unknown (a run whose configuration could not be compared here), other (another configuration's run) or foreign
    (files that are no run)."""
    from ..rundir import CONFIG_NAME, config_hash
    from ..results import RESULT_NAME
    config_file = cell.run_dir / CONFIG_NAME
    if not config_file.is_file():
        if cell.run_dir.is_dir() and any(cell.run_dir.iterdir()):
            return "foreign"
        return "new"
    try:
        import json
        theirs = config_hash(json.loads(config_file.read_text()).get("config") or {})
    except (OSError, ValueError):
        return "foreign"
    mine = cell.config_hash = identities.config_hash(cell.settings)
    if mine is None:
        return "unknown"
    if mine != theirs:
        return "other"
    return "done" if (cell.run_dir / RESULT_NAME).is_file() else "partial"
