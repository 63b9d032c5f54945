"""The `tracking-validator` command: one subcommand per module of `streams.commands`.

Each command module exposes `configure(parser)` and `run(args) -> int` (or, serving two
commands, `configure_<name>`/`run_<name>` and `HELP_<NAME>`), and keeps its heavy
imports (faust, aiokafka) inside `run` so that light commands such as `check` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module under streams.commands
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "worker": "worker",
    "check": "check",
    "lookup": "lookup",
    "scan": "scan",
    "replay": "replay",
    "import": "transfer",
    "export": "transfer",
    "simulate": "simulate",
    "report": "report",
    "broker": "broker",
    "notify": "notify",
    "console": "console",
    "alerts": "alerts",
}


def version() -> str:
    """The installed distribution's version (pyproject.toml's)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("tracking-validator")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracking-validator",
        description="Flag duplicate, reused and invalid parcel tracking numbers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"streams.commands.{module_name}")
        doc = (module.__doc__ or "").strip().splitlines()
        # a module serving two commands names each one's summary HELP_<NAME>
        summary = getattr(module, f"HELP_{name.upper()}", None) or (doc[0] if doc else name)
        configure = getattr(module, f"configure_{name}", None) or module.configure
        p = sub.add_parser(name, help=summary, description=summary)
        configure(p)
        p.set_defaults(_run=getattr(module, f"run_{name}", None) or module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `tracking-validator check ... | head`: the reader left; not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
