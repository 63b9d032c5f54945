"""`python -m streams.tools.samples`: regenerate incident.jsonl with the seeded simulate command."""

import shutil
import tempfile
from pathlib import Path

from streams.commands.cli import main
from streams.tools.samples import INCIDENT, SAMPLE_COMMAND

with tempfile.TemporaryDirectory() as out:
    main([*SAMPLE_COMMAND.split(), "--out", out])
    shutil.copyfile(Path(out) / "events.jsonl", INCIDENT)
print(INCIDENT)
