"""`report` figures on a hand-made alert file, checked by hand."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import orjson
import pytest

from streams.commands.cli import main


def _label(label_id: str, seller: str, order: str, amount: str | None, currency: str = "USD"):
    cost = None if amount is None else {"amount": amount, "currency": currency}
    return {
        "label_id": label_id,
        "seller_id": seller,
        "order_id": order,
        "channel": "buy_shipping",
        "purchased_at": "2025-03-01T10:00:00Z",
        "cost": cost,
    }


ALL = ["protect_account_health", "refund_label", "fund_a_to_z_claim", "notify_buyer"]


def _alert(alert_id, rule, severity, label, event_time, actions, others=()):
    return {
        "alert_id": alert_id,
        "rule": rule,
        "severity": severity,
        "label_id": label["label_id"],
        "seller_id": label["seller_id"],
        "order_id": label["order_id"],
        "tracking_number": "9400100000000000000000",
        "carrier": "usps",
        "event_time": event_time,
        "detected_at": "2025-03-10T00:00:00Z",
        "labels": [*others, label],
        "evidence": {},
        "actions": actions,
    }


A1 = _label("L1", "S-A", "O1", "4.50")
A2 = _label("L2", "S-A", "O2", "10.25")
A3 = _label("L3", "S-A", "O3", "7.00", "CAD")
B1 = _label("L4", "S-B", "O4", None)
C1 = _label("L5", "S-C", "O5", "3.00")
OLD = _label("L0", "S-Z", "O0", "9.99")

ALERTS = [
    # S-A: two rules on one label -> one order, one refund
    _alert("a1", "duplicate_tracking", "critical", A1, "2025-03-01T10:05:00Z", ALL, [OLD]),
    _alert("a2", "previously_used", "critical", A1, "2025-03-01T10:05:00Z", ALL, [OLD]),
    _alert("a1", "duplicate_tracking", "critical", A1, "2025-03-01T10:05:00Z", ALL, [OLD]),
    _alert("a3", "previously_used", "critical", A2, "2025-03-01T11:30:00Z", ALL, [OLD]),
    _alert("a4", "invalid_tracking", "warning", A3, "2025-03-02T09:00:00Z",
           ["protect_account_health", "refund_label"]),
    # S-B: refund owed but the label has no cost
    _alert("a5", "destination_mismatch", "warning", B1, "2025-03-02T12:00:00Z",
           ["notify_buyer", "refund_label"]),
    # S-C: outside the window below
    _alert("a6", "voided_label_scanned", "warning", C1, "2025-02-20T08:00:00Z", ALL),
]  # fmt: skip


@pytest.fixture
def alerts_file(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(b"".join(orjson.dumps(a) + b"\n" for a in ALERTS) + b"\n")
    return path


def _report(alerts_file: Path, tmp_path: Path, fmt: str, *extra: str) -> str:
    out = tmp_path / f"report.{fmt}"
    argv = ["report", "--alerts-file", str(alerts_file), "--format", fmt, "--output", str(out)]
    assert main([*argv, *extra]) == 0
    return out.read_text()


def test_json_figures(alerts_file: Path, tmp_path: Path) -> None:
    report = json.loads(_report(alerts_file, tmp_path, "json", "--since", "2025-03-01"))
    totals = report["totals"]
    assert totals["alerts"] == 5  # a1 once, a6 before the window
    assert totals["by_rule"] == {
        "invalid_tracking": 1,
        "duplicate_tracking": 1,
        "previously_used": 2,
        "destination_mismatch": 1,
    }
    assert totals["affected_orders"] == 4
    assert totals["orders_to_protect"] == 3
    assert totals["a_to_z_claims"] == 2
    assert totals["buyers_to_notify"] == 3
    assert totals["labels_to_refund"] == 4
    assert totals["refunds_owed"] == {"CAD": "7.00", "USD": "14.75"}
    assert totals["refunds_unpriced"] == 1
    sellers = {s["seller_id"]: s for s in report["sellers"]}
    assert list(sellers) == ["S-A", "S-B"]  # most critical first
    assert sellers["S-A"]["orders"]["a_to_z_claims"] == ["O1", "O2"]
    assert sellers["S-A"]["refund_label_ids"] == ["L1", "L2", "L3"]
    assert sellers["S-B"]["refunds_owed"] == {}
    hours = {(t["hour"], t["rule"]): t["alerts"] for t in report["timeline"]}
    assert hours[("2025-03-01T10:00:00Z", "previously_used")] == 1
    assert hours[("2025-03-01T11:00:00Z", "previously_used")] == 1


def test_csv_rows(alerts_file: Path, tmp_path: Path) -> None:
    text = _report(alerts_file, tmp_path, "csv", "--until", "2025-03-02T10:00:00Z")
    rows = {r["seller_id"]: r for r in csv.DictReader(io.StringIO(text))}
    assert set(rows) == {"S-A", "S-C"}
    a = rows["S-A"]
    assert (a["alerts"], a["critical"], a["warning"]) == ("4", "3", "1")
    assert (a["affected_orders"], a["orders_to_protect"], a["a_to_z_claims"]) == ("3", "3", "2")
    assert (a["refund_USD"], a["refund_CAD"]) == ("14.75", "7.00")
    assert (rows["S-C"]["refund_USD"], rows["S-C"]["refund_CAD"]) == ("3.00", "0.00")


def test_html_is_self_contained(alerts_file: Path, tmp_path: Path) -> None:
    page = _report(alerts_file, tmp_path, "html")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "https://" not in page and "@import" not in page and "url(" not in page
    assert page.count("<rect") >= 6


def test_unreadable_alerts_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"rule": "x", "event_time": "2025-01-01T00:00:00Z"}\nnot json\n')
    assert main(["report", "--alerts-file", str(bad)]) == 2
    assert main(["report", "--alerts-file", str(tmp_path / "missing.jsonl")]) == 2


def test_the_highest_revision_of_each_alert_counts(tmp_path: Path) -> None:
    def rev(alert: dict, revision: int, status: str = "open", **fields: object) -> dict:
        return {**alert, "revision": revision, "status": status, **fields}

    warning = ["protect_account_health", "refund_label", "notify_buyer"]
    d1 = _alert("d1", "duplicate_tracking", "warning", A1, "2025-03-01T10:05:00Z", warning)
    d2 = _alert("d2", "destination_mismatch", "warning", B1, "2025-03-01T12:00:00Z", ALL)
    lines = [
        rev(d1, 2, severity="critical", actions=ALL, event_time="2025-03-01T11:00:00Z"),
        rev(d1, 1),  # an older revision read after the newer one: ignored
        rev(d2, 1),
        rev(d2, 2, "retracted", actions=[]),  # retracted: counts for nothing
        rev(d2, 1),  # a redelivered older revision does not bring it back
        rev(_alert("d3", "previously_used", "critical", C1, "2025-03-01T13:00:00Z", ALL), 1),
        rev(_alert("d3", "previously_used", "critical", C1, "2025-03-01T13:00:00Z", ALL), 2,
            "retracted", actions=[]),
        rev(_alert("d3", "previously_used", "critical", C1, "2025-03-01T14:00:00Z", ALL), 3),
    ]
    path = tmp_path / "revised.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    report = json.loads(_report(path, tmp_path, "json"))
    totals = report["totals"]
    assert totals["alerts"] == 2
    assert totals["by_rule"] == {"duplicate_tracking": 1, "previously_used": 1}
    assert totals["by_severity"] == {"critical": 2}  # d1 as revised
    assert totals["a_to_z_claims"] == 2 and totals["affected_orders"] == 2
    assert {(t["hour"], t["rule"]) for t in report["timeline"]} == {
        ("2025-03-01T11:00:00Z", "duplicate_tracking"),  # the event time of revision 2
        ("2025-03-01T14:00:00Z", "previously_used")}  # re-opened at revision 3
    # the window selects on the highest revision's event time
    late = json.loads(_report(path, tmp_path, "json", "--since", "2025-03-01T13:30:00Z"))
    assert late["totals"]["by_rule"] == {"previously_used": 1}


def _seller_section(page: str, seller: str) -> str:
    start = page.index(f"<summary><b>{seller}</b>")
    return page[start:page.index("</details>", start)]


def _rows(section: str) -> list[list[str]]:
    import re
    from html import unescape

    body = section[section.index("<tbody>"):]
    return [[unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_html_lists_what_to_act_on_per_seller(alerts_file: Path, tmp_path: Path) -> None:
    page = _report(alerts_file, tmp_path, "html", "--since", "2025-03-01")
    assert "What to act on, per seller" in page
    a = _seller_section(page, "S-A")
    assert "3 orders, 3 labels to refund, refunds owed 7.00 CAD, 14.75 USD" in a
    protect_all = ("protect account health, fund A-to-z claim, notify buyer, refund label")
    assert _rows(a) == [
        # two rules on one label: one row, one refund
        ["O1", "L1", "usps 9400100000000000000000", "duplicate_tracking, previously_used",
         protect_all, "4.50 USD"],
        ["O2", "L2", "usps 9400100000000000000000", "previously_used", protect_all,
         "10.25 USD"],
        ["O3", "L3", "usps 9400100000000000000000", "invalid_tracking",
         "protect account health, refund label", "7.00 CAD"],
    ]
    b = _seller_section(page, "S-B")
    assert _rows(b) == [["O4", "L4", "usps 9400100000000000000000", "destination_mismatch",
                         "notify buyer, refund label", "no cost on the label"]]
    assert "<summary><b>S-C</b>" not in page  # outside the window: nothing to do
    assert "L0" not in page  # an earlier holder is context, not a label to act on


def test_every_action_of_the_alert_schema_has_a_name_in_the_report() -> None:
    from streams.commands.report import ACTION_NAMES
    from streams.core.schema import load

    actions = {a for by_severity in load("alert")["x-actions"].values()
               for names in by_severity.values() for a in names}
    assert set(ACTION_NAMES) == actions
