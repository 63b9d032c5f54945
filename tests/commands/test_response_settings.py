"""The incident settings: the same four flags on worker, scan, replay and report, over the
TRACKING_VALIDATOR_INCIDENT_* environment."""

from __future__ import annotations

from datetime import timedelta

import pytest

from streams.commands import response_settings, worker
from streams.commands.cli import build_parser
from streams.core.settings import Settings

FLAGS = ["--incident-window", "30m", "--incident-min-alerts", "4", "--incident-min-sellers",
         "2", "--incident-quiet", "2h"]


@pytest.mark.parametrize("command", [["worker"], ["scan", "x.jsonl"], ["replay"],
                                     ["report", "--alerts", "a.jsonl"]])
def test_every_command_takes_the_incident_flags(command: list[str]) -> None:
    args = build_parser().parse_args([*command, *FLAGS])
    settings = response_settings.settings_from(args, Settings())
    assert (settings.incident_window_s, settings.incident_min_alerts,
            settings.incident_min_sellers, settings.incident_quiet_s) == (1800, 4, 2, 7200)


def test_the_worker_carries_them_in_its_config_over_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKING_VALIDATOR_INCIDENT_WINDOW_MINUTES", "15")
    monkeypatch.setenv("TRACKING_VALIDATOR_INCIDENT_MIN_ALERTS", "50")
    monkeypatch.setenv("TRACKING_VALIDATOR_INCIDENT_MIN_SELLERS", "5")
    monkeypatch.setenv("TRACKING_VALIDATOR_INCIDENT_QUIET_HOURS", "0.5")
    config = worker.config_from_args(build_parser().parse_args(["worker"]))
    assert config.settings.incident_window == timedelta(minutes=15)
    assert (config.settings.incident_min_alerts, config.settings.incident_min_sellers) == (50, 5)
    assert config.settings.incident_quiet_s == 1800
    flagged = worker.config_from_args(build_parser().parse_args(
        ["worker", "--incident-min-alerts", "7"]))
    assert flagged.settings.incident_min_alerts == 7  # the flag wins
    assert flagged.settings.incident_min_sellers == 5  # the rest from the environment


def test_defaults_and_bad_values() -> None:
    settings = Settings()
    assert (settings.incident_window_s, settings.incident_min_alerts,
            settings.incident_min_sellers, settings.incident_quiet_s) == (3600, 10, 3, 21600)
    with pytest.raises(ValueError, match="incident_window"):
        Settings(incident_window=timedelta(0))
    with pytest.raises(ValueError, match="incident_min_sellers"):
        Settings(incident_min_sellers=0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["scan", "x", "--incident-quiet", "soon"])
