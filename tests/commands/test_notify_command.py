"""`tracking-validator notify`: usage errors exit 2 with a reason, before any Kafka is asked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from streams.commands.cli import build_parser
from streams.commands.notify import _topics


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams", "notify", *args],
                          capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    import os

    clean = {k: v for k, v in os.environ.items()
             if k not in ("TRACKING_VALIDATOR_WEBHOOK_SECRET", "TRACKING_VALIDATOR_WEBHOOK_URL")}
    clean["KAFKA_BOOTSTRAP_SERVERS"] = "127.0.0.1:1"  # never reached: usage is checked first
    return clean


def test_no_secret_is_a_usage_error(env: dict[str, str]) -> None:
    done = run(["--url", "https://example.test/hook"], env)
    assert done.returncode == 2
    assert "TRACKING_VALIDATOR_WEBHOOK_SECRET" in done.stderr


def test_a_url_must_be_http_or_https(env: dict[str, str]) -> None:
    env["TRACKING_VALIDATOR_WEBHOOK_SECRET"] = "s"
    done = run(["--url", "ftp://example.test/hook"], env)
    assert done.returncode == 2 and "--url" in done.stderr


def test_topics_default_to_actions_and_incidents_and_take_commas_or_repeats() -> None:
    assert _topics(None) == ["tracking.actions", "tracking.incidents"]
    assert _topics(["tracking.actions,tracking.alerts", "tracking.alerts"]) == [
        "tracking.actions", "tracking.alerts"]
    args = build_parser().parse_args(["notify", "--give-up-after", "90m", "--timeout", "5s"])
    assert args.give_up_after == 5400.0 and args.timeout == 5.0
