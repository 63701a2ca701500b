"""The `emotune` command. Each command group lives beside the code it drives and registers itself here.

Groups are imported lazily by name so that `emotune --help` and light commands never import TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

from emotune.environment import FullEnvironmentRequired, missing_full_module, needs_full_environment

# module path -> it defines `register(subparsers)` adding one or more sub-commands.
COMMAND_MODULES: tuple[str, ...] = (
    "emotune.config",
    "emotune.data.commands",
    "emotune.evaluate_commands",
    "emotune.gpu_commands",
    "emotune.music.commands",
    "emotune.analyze_commands",
    "emotune.ui_commands",
)


def version() -> str:
    """The installed distribution's version, or "unknown" when run from a source tree never installed."""
    try:
        return metadata.version("emotune")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotune", description="Facial-expression recognition that recommends music for your mood."
    )
    parser.add_argument("--version", action="version", version=f"emotune {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Each sub-command sets `func(args) -> int` via set_defaults. Commands import their libraries lazily, so
    # one that needs the full environment fails here, in the light one, before it has done anything.
    try:
        return int(args.func(args) or 0)
    except FullEnvironmentRequired as err:
        print(f"emotune {args.command}: {err}", file=sys.stderr)
    except ModuleNotFoundError as err:
        module = missing_full_module(err)
        if module is None:
            raise
        print(needs_full_environment(f"emotune {args.command}", module), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
