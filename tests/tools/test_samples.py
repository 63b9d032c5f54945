"""The bundled sample is exactly what its documented simulate command produces."""

from pathlib import Path

from streams.commands.cli import main
from streams.tools.samples import INCIDENT, SAMPLE_COMMAND


def test_incident_sample_is_reproducible(tmp_path: Path) -> None:
    assert main([*SAMPLE_COMMAND.split(), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "events.jsonl").read_bytes() == INCIDENT.read_bytes()
