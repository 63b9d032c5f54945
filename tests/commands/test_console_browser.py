"""The console in a real browser (Debian's chromium driven by Playwright), against the demo: a
worker fed the sample incident, the console the demo starts, on the test broker.

The page must show the incident, the rate chart and the alert list; an alert produced now
must appear within 2 s; a click on it must show its evidence. A screenshot is saved as a test
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
SAMPLE_ALERTS = 14  # what the worker raises from the bundled sample (the demo's own check)


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


def incident_of(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """An incident record (contract, tracking.incidents) over the sample's critical alerts, as
    a worker of the incidents branch publishes; the test produces it itself."""
    import hashlib

    started = "2024-12-17T18:00:00Z"
    critical = [a for a in alerts if a["severity"] == "critical"]
    return {
        "incident_id": hashlib.sha256(f"usps|buy_shipping|{started}".encode()).hexdigest()[:32],
        "carrier": "usps", "channel": "buy_shipping", "status": "open", "revision": 1,
        "started_at": started, "ended_at": "2024-12-17T21:00:00Z", "resolved_at": None,
        "alerts": len(critical), "labels": len(critical),
        "sellers": len({a["seller_id"] for a in critical}),
        "orders": len({a["order_id"] for a in critical}),
        "by_rule": {"previously_used": 3, "duplicate_tracking": 2},
        "refunds_owed": [{"currency": "USD", "amount": "38.42"}],
        "windows": [{"start": "2024-12-17T18:00:00Z", "alerts": 2, "sellers": 2},
                    {"start": "2024-12-17T19:00:00Z", "alerts": 0, "sellers": 0},
                    {"start": "2024-12-17T20:00:00Z", "alerts": 3, "sellers": 3}],
        "sample": [a["tracking_number"] for a in critical][:10],
        "actions": ["hold_label_sales"], "detected_at": "2026-01-01T00:00:00Z",
    }


async def wait_for_console(stderr: Path, demo: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for line in stderr.read_text(errors="replace").splitlines():
            if line.startswith("console: http"):
                return line.split(" ", 1)[1].strip()
        assert demo.poll() is None, stderr.read_text(errors="replace")
        await asyncio.sleep(0.2)
    raise AssertionError(f"the demo printed no console URL: {stderr.read_text()}")


async def test_the_console_in_a_browser(kafka_bootstrap: str, kafka_admin: Any,
                                        tmp_path: Path) -> None:
    from aiokafka.admin import NewTopic
    from conftest import wait_for_topic
    from playwright.async_api import async_playwright

    executable = chromium()
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
            while True:  # the worker has raised the sample's alerts
                async with http.get(f"{url}api/state") as response:
                    state = await response.json()
                if state["alerts_in_view"] >= SAMPLE_ALERTS:
                    break
                assert time.monotonic() < deadline, state["alerts_in_view"]
                assert demo.poll() is None, stderr.read_text()
                await asyncio.sleep(0.5)
        topics = state["topics"]
        alerts = state["alerts"]
        await kafka_admin.create_topics([NewTopic(topics["incident"], 1, 1)])
        await wait_for_topic(kafka_admin, topics["incident"], 1)
        incident = incident_of(alerts)
        await produce(kafka_bootstrap, topics["incident"], incident,
                      key=b"usps:buy_shipping")

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS, headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(url)

                # the incident, the chart and the alert list
                row = page.locator(f'tr.incident[data-incident-id="{incident["incident_id"]}"]')
                await row.wait_for(timeout=15_000)
                assert "open" in await row.inner_text()
                assert "buy_shipping" in await row.inner_text()
                assert "38.42 USD" in await row.inner_text()
                assert await row.locator("svg.spark path").count() == 2
                await page.locator("#rate-chart rect").first.wait_for(timeout=5_000)
                legend = await page.locator("#chart .legend").inner_text()
                assert "previously_used" in legend and "destination_mismatch" in legend
                assert await page.locator("tr.alert").count() == SAMPLE_ALERTS

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
                assert await page.locator("tr.alert").count() == SAMPLE_ALERTS + 1

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
                    f"document.querySelectorAll('tr.alert').length === {SAMPLE_ALERTS + 1}",
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
