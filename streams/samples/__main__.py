"""`python -m streams.samples`: regenerate incident.jsonl with the seeded simulate command."""

import shutil
import tempfile
from pathlib import Path

from streams.cli import main
from streams.samples import INCIDENT, SAMPLE_COMMAND

with tempfile.TemporaryDirectory() as out:
    main([*SAMPLE_COMMAND.split(), "--out", out])
    shutil.copyfile(Path(out) / "events.jsonl", INCIDENT)
print(INCIDENT)
