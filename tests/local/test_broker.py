"""The local broker: config generation, error paths, and the `broker` command end to end."""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from streams.local import broker as kb

REPO = Path(__file__).resolve().parents[2]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def fake_tool(bin_dir: Path, name: str, script: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return path


@pytest.fixture
def bare_path(tmp_path, monkeypatch) -> Path:
    """PATH holds only an empty bin dir (plus what a test puts there); no JAVA_HOME."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mkdir", "touch"):  # what the fake tools below need
        (bin_dir / tool).symlink_to(shutil.which(tool))
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv(kb.CACHE_ENV, str(tmp_path / "cache"))
    return bin_dir


# ---------------------------------------------------------------- configuration


def test_server_properties_single_combined_kraft_node(tmp_path):
    props = kb.server_properties(
        host="127.0.0.1", port=19092, controller_port=19093, log_dirs=tmp_path
    )
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert int(props["offsets.topic.num.partitions"]) <= 8
    assert props["num.partitions"] == "1"
    assert props["log.dirs"] == str(tmp_path)
    assert all(isinstance(v, str) for v in props.values())


def test_index_cap_covers_a_full_segment(tmp_path):
    # the index cap is small (its readahead stall), but a segment must fill before its
    # index does: one offset entry (8 bytes) and at most one time entry (12) per 4 KiB
    props = kb.server_properties(host="127.0.0.1", port=1, controller_port=2, log_dirs=tmp_path)
    segment = int(props["log.segment.bytes"])
    cap = int(props["log.index.size.max.bytes"])
    interval = int(props.get("log.index.interval.bytes", 4096))
    assert segment // interval * 12 <= cap < 10 * 1024 * 1024


def test_server_properties_extra_overrides(tmp_path):
    props = kb.server_properties(
        host="127.0.0.1",
        port=1,
        controller_port=2,
        log_dirs=tmp_path,
        extra={"num.partitions": 3, "log.retention.ms": 1000},
    )
    assert props["num.partitions"] == "3"
    assert props["log.retention.ms"] == "1000"


def test_pom_pins_kafka_and_the_slf4j1_log4j2_binding():
    pom = kb._pom("4.1.1")
    assert "<artifactId>kafka_2.13</artifactId><version>4.1.1</version>" in pom
    assert f"<artifactId>log4j-core</artifactId><version>{kb.LOG4J_VERSION}</version>" in pom
    # Kafka 4.1 uses slf4j-api 1.7.x: the binding is log4j-slf4j-impl, not -slf4j2-
    assert "log4j-slf4j-impl" in pom and "log4j-slf4j2-impl" not in pom


def test_cluster_id_is_16_bytes_urlsafe_base64():
    cid = kb.new_cluster_id()
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cid)
    assert cid != kb.new_cluster_id()


def test_cluster_id_never_starts_with_a_dash(monkeypatch):
    # uuid bytes whose base64 starts with "-" (0xf8 -> "-" under the URL-safe alphabet)
    ids = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(kb.uuid, "uuid4", lambda: next(ids))
    assert not kb.new_cluster_id().startswith("-")


def test_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv(kb.CACHE_ENV, str(tmp_path / "k"))
    assert kb.cache_base() == tmp_path / "k"
    assert kb.kafka_dir("4.1.1") == tmp_path / "k" / "4.1.1"
    assert kb.kafka_dir("4.0.0", tmp_path / "x") == tmp_path / "x" / "4.0.0"
    monkeypatch.delenv(kb.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kb.cache_base() == tmp_path / "xdg" / "tracking-validator" / "kafka"


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_402"', 8),
        ('openjdk version "11.0.2" 2019-01-15', 11),
        ("garbage", None),
    ],
)
def test_java_version_parsing(text, major):
    assert kb._parse_java_major(text) == major


def test_requested_port_in_use_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        broker = kb.LocalBroker(port=port)
        with pytest.raises(kb.BrokerError, match="already in use"):
            broker._pick_ports()


def test_bootstrap_servers_before_start_is_an_error():
    with pytest.raises(kb.BrokerError, match="not started"):
        _ = kb.LocalBroker().bootstrap_servers


# ---------------------------------------------------------------- error paths


def test_missing_java_names_what_to_install(bare_path):
    with pytest.raises(kb.BrokerError, match=r"java not found: install a Java 17\+ JDK"):
        kb.check_java()


def test_old_java_is_rejected(bare_path):
    fake_tool(bare_path, "java", "echo 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    with pytest.raises(kb.BrokerError, match=r"is Java 11, Kafka needs 17\+"):
        kb.check_java()


def test_java_home_wins_over_path(bare_path, tmp_path, monkeypatch):
    fake_tool(bare_path, "java", "echo 'openjdk version \"11\"' >&2\n")
    home = tmp_path / "jdk21"
    fake_tool(home / "bin", "java", "echo 'openjdk version \"21.0.1\"' >&2\n")
    monkeypatch.setenv("JAVA_HOME", str(home))
    assert kb.check_java() == str(home / "bin" / "java")


def test_missing_mvn_names_what_to_install(bare_path):
    with pytest.raises(kb.BrokerError, match=r"mvn not found: install Maven"):
        kb.fetch_kafka("4.1.1")


def test_failed_download_leaves_nothing_that_looks_complete(bare_path, tmp_path):
    # mvn copies one jar, then fails: the half-done fetch must not be taken for the real one
    fake_tool(
        bare_path,
        "mvn",
        'for a in "$@"; do case "$a" in -DoutputDirectory=*) d="${a#-DoutputDirectory=}";; '
        "esac; done\n"
        'mkdir -p "$d" && touch "$d/kafka_2.13-4.1.1.jar"\n'
        "echo '[ERROR] Could not transfer artifact: Connection refused'\nexit 1\n",
    )
    with pytest.raises(kb.BrokerError) as info:
        kb.fetch_kafka("4.1.1")
    message = str(info.value)
    assert message.splitlines()[0].startswith("downloading Kafka 4.1.1 with mvn failed (exit 1)")
    assert "Connection refused" in message
    cache = tmp_path / "cache"
    assert not (cache / "4.1.1").exists()
    assert [p.name for p in cache.iterdir() if p.name.startswith(".4.1.1")] == []
    assert (cache / "fetch-4.1.1-failed.log").is_file()


def test_fetch_is_atomic_and_done_once(bare_path, tmp_path):
    calls = tmp_path / "calls"
    fake_tool(
        bare_path,
        "mvn",
        f'echo x >> "{calls}"\n'
        'for a in "$@"; do case "$a" in -DoutputDirectory=*) d="${a#-DoutputDirectory=}";; '
        "esac; done\n"
        'mkdir -p "$d" && touch "$d/kafka_2.13-9.9.9.jar" "$d/kafka-clients-9.9.9.jar"\n',
    )
    path = kb.fetch_kafka("9.9.9")
    assert path == tmp_path / "cache" / "9.9.9"
    assert (path / "libs" / "kafka_2.13-9.9.9.jar").is_file()
    assert (path / kb.COMPLETE_MARKER).is_file()
    assert (path / "fetch.log").is_file()
    assert kb.fetch_kafka("9.9.9") == path
    assert calls.read_text().count("x") == 1


def _cli(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streams", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_broker_command_without_java_fails_with_one_line(bare_path, tmp_path):
    env = {**os.environ, "PATH": str(bare_path), "PYTHONPATH": str(REPO)}
    proc = _cli(["broker"], env)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert out == ""
    assert err.strip().splitlines() == [
        f"tracking-validator broker: error: java not found: {kb.JAVA_HINT}"
    ]


def test_broker_command_fetch_only_without_mvn(bare_path):
    env = {**os.environ, "PATH": str(bare_path), "PYTHONPATH": str(REPO)}
    proc = _cli(["broker", "--fetch-only"], env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "mvn not found: install Maven" in err


# ---------------------------------------------------------------- integration


def _need_jars() -> None:
    try:
        kb.check_java()
        kb.fetch_kafka()
    except kb.BrokerError as exc:
        if in_ci():
            pytest.fail(f"local broker unavailable under CI: {exc}")
        pytest.skip(f"local broker unavailable: {exc}")


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        raise AssertionError(f"no stdout line within {timeout}s")
    return proc.stdout.readline()


def _stop(proc: subprocess.Popen, timeout: float = 40) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


@pytest.mark.integration
def test_broker_command_serves_then_stops_and_cleans_up(tmp_path):
    _need_jars()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(REPO)}
    proc = _cli(["broker"], env)
    try:
        line = _first_line(proc, timeout=120)
        match = re.fullmatch(r"bootstrap\.servers=127\.0\.0\.1:(\d+)\n", line)
        assert match, line
        assert kb.probe_metadata("127.0.0.1", int(match.group(1))) == 1
        assert next(p.name for p in tmpdir.iterdir()).startswith("tracking-validator-kafka-")
        started = time.monotonic()
        rc, err = _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, err
    assert time.monotonic() - started < 30
    assert "stopping" in err
    assert list(tmpdir.iterdir()) == []  # data dir removed
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=2).close()


@pytest.mark.integration
def test_broker_command_keeps_a_given_data_dir_and_restarts_on_it(tmp_path):
    _need_jars()
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cluster_ids = []
    for _ in range(2):
        proc = _cli(["broker", "--data-dir", str(data)], env)
        try:
            assert _first_line(proc, timeout=120).startswith("bootstrap.servers=127.0.0.1:")
            rc, err = _stop(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert rc == 0, err
        assert (data / "kraft-logs" / "meta.properties").is_file()
        cluster_ids.append(kb._read_cluster_id(data / "kraft-logs"))
    assert cluster_ids[0] and cluster_ids[0] == cluster_ids[1]


@pytest.mark.integration
def test_start_failure_reports_the_log_tail(tmp_path):
    _need_jars()
    broker = kb.LocalBroker(data_dir=tmp_path / "d", config={"node.id": "not-a-number"})
    with pytest.raises(kb.BrokerError) as info:
        broker.start()
    message = str(info.value)
    assert "log: " in message and str(tmp_path / "d" / "broker.log") in message
    assert "not-a-number" in message  # the tail of the log explains what went wrong
    assert broker.process is None


def test_sweep_removes_only_dirs_of_dead_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    finished = subprocess.Popen(["true"])
    finished.wait()
    dirs = {}
    for name, pids in {
        "dead": f"{finished.pid}\n",
        "alive": f"{finished.pid}\n{os.getpid()}\n",
        "foreign": None,
    }.items():
        d = tmp_path / f"{kb.TEMP_PREFIX}{name}"
        d.mkdir()
        if pids is not None:
            (d / kb.OWNER_FILE).write_text(pids)
        os.utime(d, (time.time() - 3600, time.time() - 3600))
        dirs[name] = d
    fresh = tmp_path / f"{kb.TEMP_PREFIX}fresh"
    fresh.mkdir()
    (fresh / kb.OWNER_FILE).write_text(f"{finished.pid}\n")
    kb.sweep_stale_data_dirs()
    assert not dirs["dead"].exists()
    assert dirs["alive"].exists() and dirs["foreign"].exists() and fresh.exists()
