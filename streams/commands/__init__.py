"""Subcommands of the `tracking-validator` CLI, one module each (see streams/commands/cli.py)."""
