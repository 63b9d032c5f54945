"""docker/ for real: the worker image built from docker/Dockerfile and run, then
docker/compose.yaml brought up (Kafka, two workers of one group, Prometheus on a container
network) and fed the bundled sample incident.

On Docker, or on podman where there is none (`.ci/containers`; tests/container_engine.py).
The alerts, dead letters and lookup answers are compared with the offline mode's reading of
the same sample; one worker container is SIGKILLed between the two halves of the feed.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from container_engine import REPO, WORKER_IMAGE, Engine, EngineError, find_engine

from streams.commands.cli import COMMANDS
from streams.core import lookup
from streams.core.detection import TrackingState, apply
from streams.core.events import decode
from streams.core.settings import Settings
from streams.local.broker import free_port, wait_for_metadata
from streams.tools.offline import Processor
from streams.tools.samples import INCIDENT, topic_of

pytestmark = pytest.mark.container

COMPOSE_FILE = REPO / "docker" / "compose.yaml"
WORKERS = ("worker-1", "worker-2")
# the compose workers' settings: one app id, default topic names, 8 partitions
INPUT_TOPICS = {"labels": "labels", "scans": "scans"}
ALERTS_TOPIC = "tracking.alerts"
DEADLETTER_TOPIC = "tracking.deadletter"
APP_ID = "tracking-validator"


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"container tests need a container engine (CI=true): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def engine() -> Engine:
    try:
        return find_engine()
    except EngineError as exc:
        _fail_or_skip(str(exc))
        raise


@pytest.fixture(scope="module")
def worker_image(engine: Engine, request: pytest.FixtureRequest) -> str:
    """docker/Dockerfile built as `tracking-validator:latest` (the name compose.yaml uses)."""
    seconds = engine.build_worker_image()
    size = engine.run("image", "inspect", "--format", "{{.Size}}", WORKER_IMAGE).stdout
    # a figure for the log, past pytest's capture (not an assertion: builds vary)
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nworker image {WORKER_IMAGE}: built in {seconds:.1f} s ({engine.cli}), "
              f"{int(size) / 2**20:.0f} MiB")  # fmt: skip
    return WORKER_IMAGE


def healthcheck_command(engine: Engine, image: str) -> list[str]:
    """The image's HEALTHCHECK test as an exec argv (its CMD form)."""
    (info,) = json.loads(engine.run("image", "inspect", image).stdout)
    # Docker keeps it in Config; podman's inspect shows it beside
    test = (info.get("Config", {}).get("Healthcheck") or info.get("Healthcheck"))["Test"]
    assert test[0] == "CMD", test
    return test[1:]


# ---------------------------------------------------------------- the image


def test_image_runs_as_a_non_root_user_and_lists_the_commands(
    engine: Engine, worker_image: str
) -> None:
    uid = engine.run("run", "--rm", "--entrypoint", "id", worker_image, "-u").stdout.strip()
    assert uid == "10001"
    out = engine.run("run", "--rm", worker_image, "--help").stdout
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ")}
    assert set(COMMANDS) <= listed, out
    # the contract the worker loads is where TRACKING_VALIDATOR_SCHEMAS points, readable
    engine.run("run", "--rm", "--entrypoint", "python", worker_image, "-c",
               "import os, pathlib; p = pathlib.Path(os.environ['TRACKING_VALIDATOR_SCHEMAS']);"
               "assert any(p.glob('*.json')) and any((p / 'carriers').iterdir())")  # fmt: skip


def test_healthcheck_fails_while_nothing_serves(engine: Engine, worker_image: str) -> None:
    """The check the compose test sees pass is not one that always passes."""
    name = f"tv-health-{uuid.uuid4().hex[:8]}"
    engine.run("run", "-d", "--name", name, "--entrypoint", "sleep", worker_image, "120")
    try:
        proc = engine.run("exec", name, *healthcheck_command(engine, worker_image), check=False)
        assert proc.returncode != 0
        assert "Connection refused" in proc.stderr or "URLError" in proc.stderr, proc.stderr
    finally:
        engine.run("kill", name, check=False)  # sleep as pid 1 ignores SIGTERM
        engine.run("rm", "-f", "-v", name, check=False)


# ---------------------------------------------------------------- compose


class Stack:
    """docker/compose.yaml up under its own project name, on free host ports."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.project = f"tvct{uuid.uuid4().hex[:8]}"
        self.ports = {"KAFKA_HOST_PORT": free_port(), "WORKER_1_WEB_PORT": free_port(),
                      "WORKER_2_WEB_PORT": free_port(), "PROMETHEUS_PORT": free_port()}  # fmt: skip
        self.bootstrap = f"localhost:{self.ports['KAFKA_HOST_PORT']}"
        self.urls = {"worker-1": f"http://127.0.0.1:{self.ports['WORKER_1_WEB_PORT']}",
                     "worker-2": f"http://127.0.0.1:{self.ports['WORKER_2_WEB_PORT']}"}  # fmt: skip
        self.prometheus = f"http://127.0.0.1:{self.ports['PROMETHEUS_PORT']}"

    def compose(self, *args: str, timeout: float = 300) -> str:
        env = self.engine.env() | {k: str(v) for k, v in self.ports.items()}
        cmd = [*self.engine.compose(), "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=REPO, stdin=subprocess.DEVNULL)  # fmt: skip
        if proc.returncode != 0:
            raise EngineError(f"{' '.join(cmd)}: exit {proc.returncode}\n"
                              f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")  # fmt: skip
        return proc.stdout

    def container(self, service: str) -> str:
        """The container's name (podman-compose and docker compose name them differently)."""
        out = self.engine.run(
            "ps", "-a", "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}",
        ).stdout.split()  # fmt: skip
        assert len(out) == 1, (service, out)
        return out[0]

    def down(self) -> None:
        """Containers, network and volumes, the images' anonymous ones too (podman-compose's
        `down -v` leaves those and the network)."""
        volumes: list[str] = []
        for service in ("kafka", *WORKERS, "prometheus"):
            try:
                info = json.loads(self.engine.run("inspect", self.container(service)).stdout)
            except (EngineError, AssertionError):
                continue
            volumes += [m["Name"] for m in info[0].get("Mounts", []) if m.get("Name")]
        try:
            self.compose("down", "-v", "-t", "5", timeout=180)
        finally:
            if volumes:
                self.engine.run("volume", "rm", "-f", *volumes, check=False)
            self.engine.run("network", "rm", f"{self.project}_default", check=False)

    def logs(self) -> str:
        parts = []
        for service in ("kafka", *WORKERS, "prometheus"):
            with_logs = self.engine.run("logs", "--tail", "40", self.container(service),
                                        check=False)  # fmt: skip
            parts.append(f"--- {service}\n{with_logs.stdout[-4000:]}{with_logs.stderr[-4000:]}")
        return "\n".join(parts)


@pytest.fixture(scope="module")
def stack(engine: Engine, worker_image: str) -> Iterator[Stack]:
    stack = Stack(engine)
    try:
        stack.compose("up", "-d", "kafka")
        wait_for_metadata(stack.bootstrap, timeout=120)
        stack.compose("up", "-d")
        yield stack
    except BaseException:
        with_logs = ""
        try:
            with_logs = stack.logs()
        finally:
            print(with_logs)
        raise
    finally:
        stack.down()


def _http(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, orjson.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def wait_until(what: str, check: Any, timeout: float, stack: Stack | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s: {what}\n"
                                 f"{stack.logs() if stack else ''}")  # fmt: skip
        time.sleep(0.5)


def wait_ready(stack: Stack, timeout: float = 120) -> None:
    for name, url in stack.urls.items():
        wait_until(f"{name} /ready", lambda u=url: _http(u + "/ready")[0] == 200, timeout, stack)


async def produce(bootstrap: str, lines: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        sent = []
        for line in lines:
            try:
                topic = INPUT_TOPICS[topic_of(orjson.loads(line))]
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                topic = INPUT_TOPICS["labels"]  # what the demo does with unreadable lines
            sent.append(await producer.send(topic, line))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def wait_topics(bootstrap: str, topics: list[str], timeout: float = 120) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while not set(topics) <= set(await admin.list_topics()):
            assert time.monotonic() < deadline, f"topics {topics} not created"
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def read_outputs(
    bootstrap: str, expected: set[str], dead: int, settle: float = 6.0, timeout: float = 180
) -> tuple[set[str], int]:
    """The open alert ids (highest revision of each alert_id) and the dead letters, read from
    the start until they equal the expected ones and nothing more arrives for `settle`
    seconds (past the workers' 2 s alert hold), or until `timeout`."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(ALERTS_TOPIC, DEADLETTER_TOPIC, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    revisions: dict[str, tuple[int, str]] = {}
    dead_letters = 0
    try:
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                quiet_since = time.monotonic()
                for record in records:
                    if tp.topic == DEADLETTER_TOPIC:
                        dead_letters += 1
                        continue
                    alert = orjson.loads(record.value)
                    revision = alert.get("revision") or 1
                    if revision > revisions.get(alert["alert_id"], (0, ""))[0]:
                        revisions[alert["alert_id"]] = (revision, alert.get("status", "open"))
            open_ids = {a for a, (_, status) in revisions.items() if status == "open"}
            if (open_ids == expected and dead_letters >= dead
                    and time.monotonic() - quiet_since > settle):
                break
    finally:
        await consumer.stop()
    return {a for a, (_, status) in revisions.items() if status == "open"}, dead_letters


def offline(lines: list[bytes]) -> tuple[dict[str, Any], int, dict[Any, TrackingState | None]]:
    """The offline mode's alerts (by id) and dead letters for the sample, and each key's
    state."""
    alerts: dict[str, Any] = {}
    dead: list[object] = []
    proc = Processor(lambda a: alerts.__setitem__(a["alert_id"], a), dead.append)
    states: dict[Any, TrackingState | None] = {}
    settings = Settings()
    for i, line in enumerate(lines):
        try:
            topic = topic_of(orjson.loads(line))
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            topic = "labels"
        proc.feed(line, source=topic, partition=0, offset=i)
        try:
            event = decode(line)
        except Exception:
            continue  # a dead letter: no state
        states[event.key], _ = apply(states.get(event.key), event, settings)
    proc.finish()
    return alerts, len(dead), states


def latest_time(lines: list[bytes]) -> str:
    latest = ""
    for line in lines:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        for name in ("purchased_at", "occurred_at", "voided_at"):
            value = obj.get(name) if isinstance(obj, dict) else None
            if isinstance(value, str) and value > latest:
                latest = value
    return latest


def test_compose_stack_processes_the_sample_incident_exactly_and_survives_a_killed_worker(
    engine: Engine, stack: Stack
) -> None:
    lines = [line for line in Path(INCIDENT).read_bytes().splitlines() if line.strip()]
    alerts, dead, states = offline(lines)
    expected = set(alerts)
    assert expected, "the sample raises alerts"

    wait_ready(stack)
    asyncio.run(wait_topics(stack.bootstrap, [*INPUT_TOPICS.values(), ALERTS_TOPIC]))
    # the workers' image HEALTHCHECK and compose's for Kafka, as the engine runs them
    for name in ("kafka", *WORKERS):
        wait_until(f"{name} healthy", lambda n=name: engine.healthy(stack.container(n)), 60,
                   stack)  # fmt: skip

    # the first half, then worker-2 killed (SIGKILL) while it works, then the rest
    half = len(lines) // 2
    asyncio.run(produce(stack.bootstrap, lines[:half]))
    killed = stack.container("worker-2")

    def started_at() -> str:
        return engine.run("inspect", "--format", "{{.State.StartedAt}}", killed).stdout.strip()

    first_start = started_at()
    engine.run("kill", killed)
    asyncio.run(produce(stack.bootstrap, lines[half:]))
    # podman may already be restarting it (restart: unless-stopped); start it either way
    engine.run("start", killed, check=False)
    wait_until("worker-2 running again", lambda: started_at() != first_start and engine.run(
        "inspect", "--format", "{{.State.Running}}", killed).stdout.strip() == "true", 60, stack)
    wait_ready(stack)

    open_ids, dead_letters = asyncio.run(read_outputs(stack.bootstrap, expected, dead))
    assert open_ids == expected, (f"missing {sorted(expected - open_ids)[:5]}, "
                                  f"unexpected {sorted(open_ids - expected)[:5]}")  # fmt: skip
    assert dead_letters >= dead  # at least once: a repeat after the kill is allowed

    # the lookup API through either worker: the owner's answer, as computed offline
    at = latest_time(lines)
    at_ts = int(datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())
    alerted = sorted({(a["carrier"], a["tracking_number"]) for a in alerts.values()})
    seen = sorted({(o["carrier"], o["tracking_number"]) for o in map(orjson.loads, lines)
                   if isinstance(o, dict) and isinstance(o.get("tracking_number"), str)
                   and isinstance(o.get("carrier"), str)})  # fmt: skip
    asked = alerted[:20] + seen[:: max(1, len(seen) // 20)]
    statuses = set()
    for carrier, number in asked:
        try:
            q = lookup.query(carrier, number)
        except lookup.RequestError:
            continue  # not a number the API takes (a malformed message's)
        want = lookup.status(states.get(q.key), q.carrier, q.number, at_ts, Settings())
        statuses.add(want["status"])
        for name, url in stack.urls.items():
            code, got = _http(f"{url}/v1/tracking/{quote(carrier)}/{quote(number, safe='')}"
                              f"?at={quote(at)}")  # fmt: skip
            assert (code, got) == (200, want), (name, carrier, number)
    assert len(statuses) > 1, statuses  # not one answer for everything

    # Prometheus scrapes both workers (its first scrape comes within scrape_interval)
    def targets_up() -> set[str] | None:
        code, body = _http(stack.prometheus + "/api/v1/targets")
        if code != 200:
            return None
        active = body["data"]["activeTargets"]
        up = {t["labels"]["instance"] for t in active if t["health"] == "up"}
        return up if up == {f"{name}:6066" for name in WORKERS} else None

    assert wait_until("Prometheus scrapes both workers", targets_up, 60, stack)
