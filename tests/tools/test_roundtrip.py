"""simulate -> scan -> report against the simulator's ground truth: every rule at 100%
precision and recall, and the report's money and order figures recomputed from what the
simulator knows it injected."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from streams.commands.cli import main
from streams.commands.simulate import write_files
from streams.core.detection import ACTIONS, RULES
from streams.tools.simulation import DEFAULT_START, Params, World, simulate

Finding = tuple[str, str, str, str, str]  # rule, tracking_number, carrier, label_id, severity


def _findings(path: Path) -> set[Finding]:
    keys = ("rule", "tracking_number", "carrier", "label_id", "severity")
    return {
        tuple(record[k] for k in keys)  # type: ignore[misc]
        for record in map(orjson.loads, path.read_bytes().splitlines())
        if record.get("kind", "alert") == "alert"
    }


def _score(truth: set[Finding], found: set[Finding]) -> dict[str, tuple[int, int, int]]:
    """rule -> (true positives, false positives, false negatives)."""
    return {
        rule: (
            len({f for f in found & truth if f[0] == rule}),
            len({f for f in found - truth if f[0] == rule}),
            len({f for f in truth - found if f[0] == rule}),
        )
        for rule in RULES
    }


def _table(title: str, score: dict[str, tuple[int, int, int]]) -> str:
    rows = [f"{title}", f"{'rule':<22}{'expected':>9}{'found':>7}{'precision':>11}{'recall':>8}"]
    for rule, (tp, fp, fn) in score.items():
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        rows.append(f"{rule:<22}{tp + fn:>9}{tp + fp:>7}{precision:>11.1%}{recall:>8.1%}")
    return "\n".join(rows)


CASES = {
    # the incident of the brief: numbers re-issued 60 days later, inside the reuse window
    "reuse-60d": Params(seed=21, labels=2500, incident_start=DEFAULT_START + timedelta(days=70),
                        incident_days=5, incident_share=0.5, malformed=5),
    # re-issued after 200 days: outside the 180-day window, so neither reuse rule may fire
    "reuse-200d": Params(seed=22, labels=1500, days=230, reuse_age_days=200,
                         incident_start=DEFAULT_START + timedelta(days=215), incident_share=0.6),
    # re-issued 40 hours later: some earlier scans fall inside the 24 h clock-skew tolerance
    "reuse-40h": Params(seed=23, labels=1500, days=40, reuse_age_days=40 / 24,
                        incident_start=DEFAULT_START + timedelta(days=20), incident_days=10,
                        incident_share=0.6),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_scan_finds_exactly_the_ground_truth(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = simulate(CASES[case])
    write_files(world, tmp_path)
    alerts, dead = tmp_path / "alerts.jsonl", tmp_path / "dead.jsonl"
    argv = ["scan", str(tmp_path / "scans.jsonl"), str(tmp_path / "labels.jsonl")]
    assert main([*argv, "--alerts", str(alerts), "--dead-letters", str(dead)]) == 0
    truth, found = _findings(tmp_path / "ground_truth.jsonl"), _findings(alerts)
    score = _score(truth, found)
    with capsys.disabled():
        print("\n" + _table(f"{case}: {len(world.messages)} messages", score))
    assert truth and truth == found, (truth - found, found - truth)
    assert len(dead.read_bytes().splitlines()) == world.malformed
    reused = [s for s in world.shipments if s.kind == "reused"]
    assert reused, "the incident must have re-issued numbers"
    if case == "reuse-200d":
        assert not {f for f in truth if f[0] in ("duplicate_tracking", "previously_used")}
    else:
        assert all(score[rule][0] > 0 for rule in RULES)
    _check_report(world, alerts, tmp_path)


def _check_report(world: World, alerts: Path, tmp_path: Path) -> None:
    """The report's figures, recomputed from the simulator's own records."""
    out = tmp_path / "report.json"
    assert (
        main(["report", "--alerts-file", str(alerts), "--format", "json", "--output", str(out)])
        == 0
    )
    totals = json.loads(out.read_text())["totals"]
    labels = {s.label_id: s for s in world.shipments if s.label_id}
    refund: set[str] = set()
    orders: dict[str, set[str]] = {"all": set(), "fund_a_to_z_claim": set(), "notify_buyer": set()}
    for g in world.ground_truth:
        actions = ACTIONS[g["rule"]][g["severity"]]
        order = labels[g["label_id"]].order_id
        orders["all"].add(order)
        for action in ("fund_a_to_z_claim", "notify_buyer"):
            if action in actions:
                orders[action].add(order)
        if "refund_label" in actions:
            refund.add(g["label_id"])
    owed = sum((Decimal(labels[lid].cost) for lid in refund), Decimal(0))
    assert totals["alerts"] == len(world.ground_truth)
    assert totals["by_rule"] == {
        r: n for r, n in Counter(g["rule"] for g in world.ground_truth).items()
    }
    assert totals["affected_orders"] == len(orders["all"])
    assert totals["a_to_z_claims"] == len(orders["fund_a_to_z_claim"])
    assert totals["buyers_to_notify"] == len(orders["notify_buyer"])
    assert totals["labels_to_refund"] == len(refund)
    assert totals["refunds_owed"] == ({"USD": f"{owed:.2f}"} if refund else {})
