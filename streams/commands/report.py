"""Impact of the alerts per seller: refunds owed, orders to protect, claims, buyers to notify.

Reads alerts from a JSON Lines file (`--alerts`, `-` for stdin) or from a topic
(`--alerts-topic` + `--bootstrap`, read from the beginning to the end offsets seen at start
without a consumer group). Of each `alert_id` the highest `revision` counts, and only while
its `status` is open (a retracted alert counts for nothing); `--from`/`--until` select on its
`event_time` ([from, until)). `--alerts-file`, `--topic` and `--since` are older spellings.
See streams/tools/impact.py for how each figure is counted.
Formats: csv (one row per seller; then, after a blank line, an incidents section with its
own header), json (totals, sellers with their order ids, hourly timeline, incidents), html
(one self-contained page: inline CSS and SVG, nothing fetched; a band per incident over the
timeline, and a table of them). Incidents are read from `--incidents PATH` (scan's
--incidents output, `-` for stdin) or `--incidents-topic` (tracking.incidents, read like the
alerts topic), else derived from the alerts with the --incident-* settings (see
streams/tools/impact.py).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sys
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

import orjson

from streams.commands import response_settings
from streams.runtime.kafka_io import (
    KafkaUnavailable,
    add_bootstrap_argument,
    config_from_args,
)
from streams.tools import impact
from streams.tools.files import describe_os_error, open_input

COLORS = {
    "invalid_tracking": "#8c6bb1",
    "duplicate_tracking": "#d7301f",
    "previously_used": "#fc8d59",
    "destination_mismatch": "#2b8cbe",
    "voided_label_scanned": "#66a61e",
}
_HTML_SELLER_ROWS = 500  # the page stays light; csv/json list every seller
_HTML_LABELS_PER_SELLER = 1000  # past this, the seller's list says how many more
# the alert schema's actions, in the order a seller works through them
ACTION_NAMES = {
    "protect_account_health": "protect account health",
    "fund_a_to_z_claim": "fund A-to-z claim",
    "notify_buyer": "notify buyer",
    "refund_label": "refund label",
    "hold_label_sales": "hold label sales",
}


def configure(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    # --alerts as in `scan`, --alerts-topic as in `worker` and `replay`; the first names stay
    source.add_argument("--alerts", "--alerts-file", dest="alerts_file", metavar="PATH",
                        help="alerts as JSON Lines; - = stdin")
    source.add_argument("--alerts-topic", "--topic", dest="topic",
                        help="read the alerts from this topic instead")
    add_bootstrap_argument(parser)
    parser.add_argument("--from", "--since", dest="since", type=impact.parse_time,
                        help="event_time >= (RFC 3339/date)")
    parser.add_argument("--until", type=impact.parse_time, help="event_time < (RFC 3339/date)")
    parser.add_argument("--format", choices=("csv", "json", "html"), default="csv",
                        help="csv: one row per seller (default); json: everything, with the "
                        "lists of orders and labels; html: one offline page")
    parser.add_argument("--output", metavar="PATH", help="write here instead of stdout")
    parser.add_argument("--title", default="Tracking number incident impact", help="HTML title")
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--incidents", metavar="PATH",
                       help="incident records (JSON Lines, - = stdin) to show instead of "
                       "deriving them from the alerts")
    given.add_argument("--incidents-topic", metavar="TOPIC",
                       help="read the incident records from this topic (e.g. "
                       "tracking.incidents) instead")
    response_settings.add_arguments(parser)


def _load(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.topic:
        return asyncio.run(_load_topic(config_from_args(args), args.topic))
    if args.alerts_file == "-":
        return list(impact.read_alerts(sys.stdin.buffer, "<stdin>"))
    with open_input(args.alerts_file) as handle:
        return list(impact.read_alerts(handle, args.alerts_file))


async def _load_topic(kafka: Any, topic: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    for offset, value in await _read_topic(kafka, topic):
        alerts.extend(impact.read_alerts([value], f"{topic}@{offset}"))
    return alerts


async def _read_topic(kafka: Any, topic: str) -> list[tuple[int, bytes]]:
    """(offset, value) of every record, from the beginning to the end offsets at start."""
    from streams.runtime.kafka_io import read_to_end

    def on_start(total: int, missing: list[str]) -> None:
        if missing:
            raise impact.AlertsError(f"no such topic: {', '.join(missing)}")

    return [(record.offset, record.value or b"")
            async for record in read_to_end(kafka, [topic], on_start=on_start)]


def run(args: argparse.Namespace) -> int:
    try:
        settings = response_settings.settings_from(args)
        alerts = _load(args)
        if args.incidents:
            incidents = _load_incidents(args)
        elif args.incidents_topic:
            read = asyncio.run(_read_topic(config_from_args(args), args.incidents_topic))
            incidents = impact.read_incidents([value for _, value in read],
                                              args.incidents_topic, args.since, args.until)
        else:
            incidents = impact.incidents_of(alerts, settings, args.since, args.until)
    except OSError as exc:
        print(f"report: {describe_os_error(exc, exc.filename or args.alerts_file)}",
              file=sys.stderr)
        return 2
    except (ValueError, KafkaUnavailable) as exc:  # AlertsError, KafkaConfigError
        print(f"report: {exc}", file=sys.stderr)
        return 2
    result = impact.assess(alerts, args.since, args.until)
    result.incidents = incidents
    if args.format == "json":
        data = orjson.dumps(impact.to_dict(result), option=orjson.OPT_INDENT_2) + b"\n"
    elif args.format == "csv":
        data = render_csv(result).encode()
    else:
        data = render_html(result, args.title).encode()
    if args.output:
        with open(args.output, "wb") as handle:
            handle.write(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def _load_incidents(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.incidents == "-":
        return impact.read_incidents(sys.stdin.buffer, "<stdin>", args.since, args.until)
    with open(args.incidents, "rb") as handle:
        return impact.read_incidents(handle, args.incidents, args.since, args.until)


def render_csv(result: impact.Impact) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(impact.csv_header(result))
    writer.writerows(impact.csv_rows(result))
    if result.incidents:  # a second table: a blank line, its header, its rows
        writer.writerow([])
        writer.writerows(impact.incident_rows(result))
    return out.getvalue()


# ---------------------------------------------------------------------------------- HTML


def _timeline_svg(result: impact.Impact) -> str:
    """Stacked bars of alerts per hour by rule, with day ticks and a legend."""
    if not result.timeline:
        return '<p class="muted">No alerts in this window.</p>'
    hours = sorted({hour for hour, _ in result.timeline})
    first, last = hours[0], hours[-1]
    # the axis spans the window asked for (whole hours), else the alerts
    if result.since is not None:
        first = min(first, _hour(result.since))
    if result.until is not None:
        last = max(last, _hour(result.until - timedelta(microseconds=1)))
    count = int((last - first) / timedelta(hours=1)) + 1
    per_hour: list[dict[str, int]] = [{} for _ in range(count)]
    for (hour, rule), n in result.timeline.items():
        per_hour[int((hour - first) / timedelta(hours=1))][rule] = n
    peak = max(sum(h.values()) for h in per_hour)
    width, height, left, bottom, top = 960, 260, 44, 36, 12
    plot_w, plot_h = width - left - 10, height - bottom - top
    bar_w = plot_w / count
    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + 28}" '
        f'role="img" aria-label="Alerts per hour by rule">'
    ]
    names: list[str] = []  # the bands' names, drawn over the bars
    for incident in result.incidents:  # a band per incident, behind the bars
        start = impact.parse_time(incident["started_at"])
        end = impact.parse_time(incident["ended_at"])
        x0 = max(left, left + (start - first) / timedelta(hours=1) * bar_w)
        x1 = min(left + plot_w, left + (end - first) / timedelta(hours=1) * bar_w)
        if x1 <= x0:
            continue
        name = f"{incident['carrier']}/{incident['channel'] or '-'}"
        parts.append(
            f'<rect class="incident" x="{x0:.2f}" y="{top}" width="{x1 - x0:.2f}" '
            f'height="{plot_h}"><title>incident {escape(name)} {escape(incident["status"])}: '
            f'{escape(incident["started_at"])} to {escape(incident["ended_at"])}, '
            f'{incident["alerts"]} alerts, {incident["sellers"]} sellers</title></rect>'
        )
        names.append(f'<text x="{x0 + 3:.1f}" y="{top + 11}" class="incident-label">'
                     f"{escape(name)}</text>")
    for i in range(5):  # horizontal grid and y labels
        value = peak * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:.0f}</text>'
        )
    for index, rules in enumerate(per_hour):
        y = top + plot_h
        x = left + index * bar_w
        hour = first + timedelta(hours=index)
        for rule in impact.RULES:
            n = rules.get(rule, 0)
            if not n:
                continue
            h = plot_h * n / peak
            y -= h
            parts.append(
                f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(bar_w - 0.5, 0.6):.2f}" '
                f'height="{h:.2f}" fill="{COLORS[rule]}"><title>'
                f"{hour:%Y-%m-%d %H:00} UTC: {n} {rule}</title></rect>"
            )
    parts.extend(names)
    day_step = max(1, count // 24 // 12 + 1)  # at most ~12 day labels
    day = first.replace(hour=0)
    while day <= last:
        if day >= first:
            x = left + (day - first) / timedelta(hours=1) * bar_w
            parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" '
                f'y2="{top + plot_h + 5}" class="axis"/>'
                f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">'
                f"{day:%b %d}</text>"
            )
        day += timedelta(days=day_step)
    parts.append(
        f'<line x1="{left}" x2="{width - 10}" y1="{top + plot_h}" y2="{top + plot_h}" '
        f'class="axis"/>'
    )
    x = left
    for rule in impact.RULES:  # legend
        parts.append(
            f'<rect x="{x}" y="{height + 8}" width="12" height="12" fill="{COLORS[rule]}"/>'
            f'<text x="{x + 16}" y="{height + 18}">{rule}</text>'
        )
        x += 34 + 7 * len(rule)
    parts.append("</svg>")
    return "".join(parts)


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;
color:#1d2733;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.muted{color:#66717d}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{border:1px solid #d9dee4;border-radius:6px;padding:10px 14px;min-width:130px}
.card b{display:block;font-size:22px}.card span{color:#66717d;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}.scroll{overflow-x:auto}
th,td{border-bottom:1px solid #e6e9ed;padding:5px 8px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f4f6f8;position:sticky;top:0}
.actions th,.actions td{text-align:left}details.seller{margin:10px 0}
summary{cursor:pointer;padding:4px 0}
svg{width:100%;max-width:960px;height:auto;font-size:11px;fill:#44505c}
svg .grid{stroke:#e6e9ed}svg .axis{stroke:#8a949e}
svg .incident{fill:#d7301f;fill-opacity:.12;stroke:#d7301f;stroke-opacity:.5}
svg .incident-label{fill:#a50f15;font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:3}
"""


def _incidents_html(result: impact.Impact) -> str:
    """The incidents (a shaded band each on the timeline) as a table."""
    if not result.incidents:
        return '<p class="muted">No incidents: no carrier and channel had enough critical ' \
            'alerts of enough sellers in one window.</p>'
    rows = list(impact.incident_rows(result))
    head = "".join(f"<th>{escape(str(h))}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in rows[1:])
    return (f"<h2>Incidents ({len(result.incidents)})</h2>\n<div class=\"scroll\"><table>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def _card(value: Any, label: str) -> str:
    return f'<div class="card"><b>{escape(str(value))}</b><span>{escape(label)}</span></div>'


def _refund(seller: impact.SellerImpact, line: impact.LabelActions) -> str:
    if "refund_label" not in line.actions:
        return ""
    priced = seller.labels_to_refund.get(line.label_id)
    return "no cost on the label" if priced is None else f"{priced[0]:.2f} {priced[1]}"


def _sellers_to_act_on(result: impact.Impact) -> str:
    """Per seller (as many as the table above), one row per affected order's label."""
    head = ("order", "label", "tracking number", "findings", "actions", "refund")
    parts = []
    for seller in result.sellers[:_HTML_SELLER_ROWS]:
        lines = seller.to_act_on()
        owed = ", ".join(f"{a:.2f} {c}" for c, a in seller.refunds_owed.items()) or "none"
        rows = []
        for line in lines[:_HTML_LABELS_PER_SELLER]:
            actions = ", ".join(name for action, name in ACTION_NAMES.items()
                                if action in line.actions)
            rules = ", ".join(r for r in impact.RULES if r in line.rules)
            cells = (line.order_id, line.label_id,
                     f"{line.carrier} {line.tracking_number}".strip(), rules, actions,
                     _refund(seller, line))
            rows.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
        more = len(lines) - _HTML_LABELS_PER_SELLER
        note = (f'<p class="muted">{more} more labels in the JSON report.</p>'
                if more > 0 else "")
        parts.append(
            f'<details class="seller" open><summary><b>{escape(seller.seller_id)}</b>: '
            f"{len(seller.affected_orders)} orders, {len(seller.labels_to_refund)} labels to "
            f"refund, refunds owed {escape(owed)}</summary>"
            f'<div class="scroll"><table class="actions"><thead><tr>'
            + "".join(f"<th>{escape(h)}</th>" for h in head)
            + f'</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{note}</details>')
    return "\n".join(parts)


def render_html(result: impact.Impact, title: str) -> str:
    summary = impact.totals(result)
    window = impact.to_dict(result)["window"]
    owed = ", ".join(f"{a} {c}" for c, a in summary["refunds_owed"].items()) or "0.00"
    cards = "".join(
        [
            _card(summary["alerts"], "alerts"),
            _card(summary["by_severity"].get("critical", 0), "critical"),
            _card(summary["sellers"], "sellers affected"),
            _card(summary["affected_orders"], "orders affected"),
            _card(summary["orders_to_protect"], "orders to protect"),
            _card(summary["a_to_z_claims"], "A-to-z claims to fund"),
            _card(summary["buyers_to_notify"], "buyers to notify"),
            _card(owed, f"label refunds owed ({summary['labels_to_refund']} labels)"),
        ]
    )
    header = impact.csv_header(result)
    rows = []
    for row in list(impact.csv_rows(result))[:_HTML_SELLER_ROWS]:
        rows.append("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>")
    incidents = _incidents_html(result)
    more = len(result.sellers) - _HTML_SELLER_ROWS
    note = f'<p class="muted">{more} more sellers in the CSV/JSON report.</p>' if more > 0 else ""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    since = window["since"] or "the first alert"
    until = window["until"] or "the last alert"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="muted">Alerts with event time from {escape(since)} to {escape(until)};
generated {generated}. Orders to protect are left out of valid tracking rate, on-time
delivery and late shipment rate.</p>
<div class="cards">{cards}</div>
<h2>Incident timeline: alerts per hour by rule (UTC)</h2>
{_timeline_svg(result)}
{incidents}
<h2>Sellers</h2>
<div class="scroll"><table>
<thead><tr>{"".join(f"<th>{escape(h)}</th>" for h in header)}</tr></thead>
<tbody>{"".join(rows)}</tbody></table></div>
{note}
<h2>What to act on, per seller</h2>
<p class="muted">Each affected order's labels, the findings on them, what to do and the label
refund owed (the label's cost).</p>
{_sellers_to_act_on(result)}
</body></html>
"""
