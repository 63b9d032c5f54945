"""`python -m streams ...`: the `tracking-validator` command."""

import sys

from streams.commands.cli import main

sys.exit(main())
