"""`cldiff-bench list`: what is registered (strategies, streams, presets, extractors, samplers, distillation
methods, commands) and where each comes from, and the profiles."""
from __future__ import annotations

from . import CommandSpec


def add_list_arguments(parser) -> None:
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--strategy", default=None, metavar="NAME", help="show one strategy and every option it takes")
    shown.add_argument("--profile", default=None, metavar="NAME", help="show one profile's budget in full")


def list_command(args, registry) -> int:
    from tabulate import tabulate

    from ..diffusion.unet import UNet, count_parameters, model_config
    from ..profiles import PROFILE_COLUMNS, PROFILES, describe_profile, get_profile, profile_rows

    if args.profile:
        print(describe_profile(get_profile(args.profile)))
        return 0
    strategies = registry.entries("strategy")
    if args.strategy:
        cls = registry.strategy(args.strategy)
        print(f"{cls.name}: {cls.description} (from {strategies[cls.name].source})")
        rows = [[f"-o {k} VALUE", type(o.default).__name__, o.default,
                 ", ".join(f"{s}: {v}" for s, v in (o.per_stream or {}).items()) or "-",
                 "-" if o.minimum is None else o.minimum, o.help] for k, o in sorted(cls.options.items())]
        print(tabulate(rows, headers=["option", "type", "default", "per stream", "minimum", "meaning"])
              if rows else "it takes no options")
        return 0
    print("Strategies")
    print(tabulate([[n, e.obj.description, ", ".join(f"{k}={v.default}" for k, v in e.obj.options.items()) or "-",
                     e.source] for n, e in sorted(strategies.items())],
                   headers=["name", "description", "options (default)", "from"]))
    print("\nStreams")
    print(tabulate([[n, e.obj.description, "no" if not e.obj.needs_data else "yes", e.source]
                    for n, e in sorted(registry.entries("stream").items())],
                   headers=["name", "description", "needs data", "from"]))
    print("\nModel presets")
    rows = []
    for n, e in sorted(registry.entries("model preset").items()):
        cfg = model_config(n, e.obj, e.obj.get("in_channels", 1))
        rows.append([n, cfg.in_channels if "in_channels" in e.obj else "any", "/".join(map(str, cfg.channels)),
                     cfg.layers_per_block, ",".join(str(32 >> a) + "px" for a in cfg.attention_levels) + "+mid",
                     f"{count_parameters(UNet(cfg)) / 1e6:.2f}M", e.source])
    print(tabulate(rows, headers=["name", "in ch", "channels", "res/level", "attention", "parameters", "from"]))
    print("\nFID feature extractors")
    print(tabulate([[n, e.obj.description, e.source] for n, e in sorted(registry.entries("extractor").items())],
                   headers=["name", "description", "from"]))
    print("\nSamplers (score --sampler)")
    print(tabulate([[n, e.obj.description, e.source] for n, e in sorted(registry.entries("sampler").items())],
                   headers=["name", "description", "from"]))
    print("\nDistillation methods (distill --method, -o teacher_accel)")
    print(tabulate([[n, e.obj.description, e.source] for n, e in sorted(registry.entries("distiller").items())],
                   headers=["name", "description", "from"]))
    print("\nCommands")
    print(tabulate([[n, e.obj.help, e.source] for n, e in registry.entries("command").items()],
                   headers=["name", "what it does", "from"], maxcolwidths=[None, 80, None]))
    print("\nProfiles (`cldiff-bench list --profile NAME` for the whole description)")
    print(tabulate(profile_rows(PROFILES.values()), headers=PROFILE_COLUMNS))
    if registry.load_errors:
        print("\nPlugins that failed to load")
        for line in registry.load_errors:
            print(f"  {line}")
    return 0


LIST = CommandSpec("list", "strategies, streams, model presets and profiles, and where each comes from",
                   add_list_arguments, list_command)
