"""A third-party-style plugin that adds a subcommand: `cldiff-bench names KIND` prints the names registered for a
kind (strategy, stream, sampler, ...), one per line, as the run's registry holds them (other plugins included)."""
from cldiff_bench.commands import CommandSpec
from cldiff_bench.errors import UserError
from cldiff_bench.registry import hookimpl

KINDS = ("strategy", "stream", "model preset", "extractor", "sampler", "distiller", "command")


def add_arguments(parser) -> None:
    parser.add_argument("kind", help=f"one of: {', '.join(KINDS)}")


def names(args, registry) -> int:
    if args.kind not in KINDS:
        raise UserError(f"no kind {args.kind!r}; kinds: {', '.join(KINDS)}")
    print("\n".join(sorted(registry.entries(args.kind))))
    return 0


@hookimpl
def cldiff_bench_commands():
    return [CommandSpec("names", "print the names registered for a kind (test plugin)", add_arguments, names)]
