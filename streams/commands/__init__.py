"""Subcommands of the `tracking-validator` CLI, one module each (see streams/cli.py)."""
