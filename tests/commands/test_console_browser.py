"""The console in a real browser (Debian's chromium driven by Playwright), against the demo: a
worker fed the sample incident, the console the demo starts, on the test broker.

The page must show the incident the worker published (as the offline mode derives it from
the sample: carrier, channel, refunds owed, its hourly sparkline), the rate chart and the
alert list; an alert produced now must appear within 2 s; a click on it must show its
evidence. A screenshot is saved as a test
artifact (TRACKING_VALIDATOR_TEST_ARTIFACTS, default out/test-artifacts/). Nothing here looks
at pixels: every check is on the page's elements and text.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession
from conftest import in_ci

pytestmark = [pytest.mark.browser, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TRACKING_VALIDATOR_TEST_ARTIFACTS") or REPO / "out" /
                 "test-artifacts")
# the closed network refuses chromium's background connections: keep it from trying
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "no chromium (bash .ci/setup installs it as root: apt-get install chromium)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


async def produce(bootstrap: str, topic: str, record: dict[str, Any], key: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await (await producer.send(topic, orjson.dumps(record), key=key))
    finally:
        await producer.stop()


def offline_reference() -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    """The offline mode's reading of the bundled sample (what the demo's worker publishes):
    its final open alerts, its one standing incident (derive at the sample's greatest event
    time, without detected_at and revision) and the number of open alerts."""
    from streams.commands.demo import expected_outcome
    from streams.core.revisions import latest
    from streams.tools.offline import Processor
    from streams.tools.samples import INCIDENT, read_jsonl, topic_of

    lines = list(read_jsonl(INCIDENT))
    expected = expected_outcome(lines)
    raised: list[dict[str, Any]] = []
    proc = Processor(raised.append, lambda d: None)
    for i, line in enumerate(lines):
        proc.feed(line, source=topic_of(orjson.loads(line)), partition=0, offset=i)
    proc.finish()
    found = [a for a in latest(raised).values() if a["alert_id"] in expected.alert_ids]
    assert len(expected.incidents) == 1, expected.incidents  # the sample raises one
    return found, next(iter(expected.incidents.values())), len(expected.alert_ids)


def money(amounts: list[dict[str, str]]) -> str:
    """Refunds owed as the page writes them (console.html, money())."""
    return ", ".join(f"{m['amount']} {m['currency']}" for m in amounts) or "–"


def when(moment: str) -> str:
    """A time as the page writes it (console.html, when())."""
    return moment.replace("T", " ").removesuffix("Z")[:16]


async def wait_for_console(stderr: Path, demo: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in stderr.read_text(errors="replace").splitlines():
            if line.startswith("console: http"):
                return line.split(" ", 1)[1].strip()
        assert demo.poll() is None, stderr.read_text(errors="replace")
        await asyncio.sleep(0.2)
    raise AssertionError(f"the demo printed no console URL: {stderr.read_text()}")


async def test_the_console_in_a_browser(kafka_bootstrap: str, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    from streams.core.console_view import ALERTS_SENT, SPARK_HOURS

    executable = chromium()
    sample_alerts, incident, n_alerts = offline_reference()
    listed = min(n_alerts, ALERTS_SENT)  # the page lists the newest ALERTS_SENT
    stdout, stderr = tmp_path / "demo.out", tmp_path / "demo.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        demo = subprocess.Popen(
            [sys.executable, "-m", "streams", "demo", "--bootstrap", kafka_bootstrap,
             "--console-port", "0", "--partitions", "1",
             "--worker-log", str(tmp_path / "worker.log")],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO,
            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        url = await wait_for_console(stderr, demo)
        async with ClientSession() as http:
            deadline = time.monotonic() + 120
            while True:  # the worker has raised the sample's alerts and its incident ended
                async with http.get(f"{url}api/state") as response:
                    state = await response.json()
                shown = {i["incident_id"]: i for i in state["incidents"]}
                if (state["alerts_in_view"] >= n_alerts
                        and (shown.get(incident["incident_id"]) or {}).get("status")
                        == incident["status"]):
                    break
                assert time.monotonic() < deadline, (state["alerts_in_view"], shown)
                assert demo.poll() is None, stderr.read_text()
                await asyncio.sleep(0.5)
        topics = state["topics"]
        alerts = state["alerts"]

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS, headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(url)

                # the worker's incident, as the offline mode derives it
                row = page.locator(f'tr.incident[data-incident-id="{incident["incident_id"]}"]')
                await row.wait_for(timeout=15_000)
                cells = [c.strip() for c in await row.locator("td").all_inner_texts()]
                assert incident["status"] in cells, cells
                assert incident["carrier"] in cells and incident["channel"] in cells, cells
                assert when(incident["started_at"]) in cells, cells
                assert money(incident["refunds_owed"]) in cells, cells
                for name in ("alerts", "sellers", "orders"):
                    assert str(incident[name]) in cells, (name, cells)
                # the hourly sparkline: a line and its area, one point per window (its title)
                spark = row.locator("svg.spark")
                assert await spark.locator("path").count() == 2
                points = (await spark.locator("title").text_content() or "").splitlines()
                assert points == [f"{when(w['start'])}: {w['alerts']}"
                                  for w in incident["windows"]][-SPARK_HOURS:]
                # the rate chart, every rule of the sample in its legend
                await page.locator("#rate-chart rect").first.wait_for(timeout=5_000)
                legend = await page.locator("#chart .legend").inner_text()
                for rule in {a["rule"] for a in sample_alerts}:
                    assert rule in legend, (rule, legend)
                # the alert list: the newest of the sample's
                assert await page.locator("tr.alert").count() == listed

                # one more alert, now: on the page within 2 s of its acknowledgement
                new = dict(alerts[0], alert_id="browser-test-alert-0001", revision=1,
                           rule="previously_used", severity="critical", carrier="usps",
                           tracking_number="9400100000000000000099", seller_id="SBROWSER",
                           detected_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           evidence={"scans": [{"status": "delivered",
                                                "occurred_at": "2025-01-01T00:00:00Z",
                                                "postal_code": "BROWSER-EVIDENCE"}]})
                new_row = page.locator('tr.alert[data-alert-id="browser-test-alert-0001"]')
                await produce(kafka_bootstrap, topics["alert"], new,
                              key=b"usps:9400100000000000000099")
                acked = time.monotonic()
                await new_row.wait_for(timeout=2_000)
                print(f"new alert on the page {time.monotonic() - acked:.2f}s after its ack")
                assert await page.locator("tr.alert").first.get_attribute(
                    "data-alert-id") == "browser-test-alert-0001"  # newest first
                assert await page.locator("tr.alert").count() == min(n_alerts + 1,
                                                                      ALERTS_SENT)

                # its labels and evidence on click
                await new_row.click()
                evidence = page.locator("#evidence")
                await evidence.wait_for(timeout=2_000)
                assert "BROWSER-EVIDENCE" in await evidence.inner_text()
                assert new["labels"][0]["label_id"] in await page.locator(
                    "#detail-labels").inner_text()

                # the filters narrow the list (a new stream with the seller)
                await page.fill("#f-seller", "SBROWSER")
                await page.dispatch_event("#f-seller", "change")
                await page.wait_for_function(
                    "document.querySelectorAll('tr.alert').length === 1", timeout=5_000)

                # workers' lag from the worker's /metrics
                await page.wait_for_function(
                    "document.querySelector('#workers-table') && "
                    "document.querySelector('#workers-table').innerText.includes('up')",
                    timeout=10_000)
                await page.fill("#f-seller", "")
                await page.dispatch_event("#f-seller", "change")
                await page.wait_for_function(
                    "document.querySelectorAll('tr.alert').length === "
                    f"{min(n_alerts + 1, ALERTS_SENT)}",
                    timeout=5_000)
                # the chosen alert stays open across the new stream
                await evidence.wait_for(timeout=2_000)
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                shot = ARTIFACTS / "console.png"
                await page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 0
                assert errors == []
            finally:
                await browser.close()
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            rc = demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
            rc = demo.wait()
    assert rc == 0, stderr.read_text()
