"""The response's settings as flags, shared by `worker`, `scan` and `replay` (flags win over
the TRACKING_VALIDATOR_INCIDENT_* environment read by streams.core.settings.Settings)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import timedelta
from typing import Any

from streams.core.settings import Settings


def duration(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `24h` or `180d`."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration (90s, 15m, 1h, 2d): {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser | Any) -> None:
    group = parser.add_argument_group(
        "incidents", "many critical alerts of one carrier and channel (contract, \"Incidents "
        "and actions\")")
    group.add_argument("--incident-window", type=duration, metavar="DURATION",
                       help="windows counted per carrier and channel, aligned to the epoch, "
                       "e.g. 1h (env TRACKING_VALIDATOR_INCIDENT_WINDOW_MINUTES; default 60)")
    group.add_argument("--incident-min-alerts", type=int, metavar="N",
                       help="qualifying alerts that make a window qualify "
                       "(env TRACKING_VALIDATOR_INCIDENT_MIN_ALERTS; default 10)")
    group.add_argument("--incident-min-sellers", type=int, metavar="N",
                       help="distinct sellers among them (env "
                       "TRACKING_VALIDATOR_INCIDENT_MIN_SELLERS; default 3)")
    group.add_argument("--incident-quiet", type=duration, metavar="DURATION",
                       help="qualifying windows closer than this are one incident, which "
                       "resolves this long after its last one, e.g. 6h (env "
                       "TRACKING_VALIDATOR_INCIDENT_QUIET_HOURS; default 6)")


def changes(args: argparse.Namespace) -> dict[str, Any]:
    """The Settings fields the flags given set."""
    out: dict[str, Any] = {}
    if getattr(args, "incident_window", None) is not None:
        out["incident_window"] = timedelta(seconds=args.incident_window)
    if getattr(args, "incident_quiet", None) is not None:
        out["incident_quiet"] = timedelta(seconds=args.incident_quiet)
    for name in ("incident_min_alerts", "incident_min_sellers"):
        if getattr(args, name, None) is not None:
            out[name] = getattr(args, name)
    return out


def settings_from(args: argparse.Namespace, base: Settings | None = None) -> Settings:
    """The environment's settings (or `base`) with the flags given applied; ValueError if
    a value is out of range."""
    return replace(base or Settings.from_env(), **changes(args))
