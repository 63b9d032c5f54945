"""The local KRaft cluster: every node a voter, and `broker --nodes 3` end to end with one
node killed and started again through its control lines and signals."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from test_broker import REPO, _need_jars, _stop

from streams.local import broker as kb
from streams.local.cluster import LocalCluster, cluster_properties


def test_cluster_properties_replicate_internal_topics_like_production():
    three = cluster_properties(3)
    assert three["offsets.topic.replication.factor"] == 3
    assert three["transaction.state.log.min.isr"] == 2
    five = cluster_properties(5)
    assert five["offsets.topic.replication.factor"] == 3  # capped at 3, as topics are
    assert cluster_properties(2)["transaction.state.log.min.isr"] == 1


def test_a_cluster_needs_a_node():
    with pytest.raises(kb.BrokerError, match="at least one node"):
        LocalCluster(0)


class Lines:
    """stdout lines of `proc`, read by a thread (select() misses lines already buffered)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.queue.put(x) for x in proc.stdout],
                         daemon=True).start()

    def next(self, timeout: float = 120) -> str:
        try:
            return self.queue.get(timeout=timeout).strip()
        except queue.Empty:
            raise AssertionError(f"no stdout line within {timeout}s") from None


def _closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


@pytest.mark.integration
def test_broker_command_runs_three_nodes_and_restarts_one(tmp_path: Path):
    _need_jars()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "broker", "--nodes", "3"], cwd=REPO, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out = Lines(proc)
    _reply = out.next
    try:
        line = _reply(timeout=180)
        match = re.fullmatch(r"bootstrap\.servers=((?:127\.0\.0\.1:\d+,){2}127\.0\.0\.1:\d+)",
                             line)
        assert match, line
        ports = [int(a.rpartition(":")[2]) for a in match.group(1).split(",")]
        assert len(set(ports)) == 3
        assert kb.probe_metadata("127.0.0.1", ports[0]) == 3
        # every node lists the whole quorum
        (root,) = tmpdir.iterdir()
        for i in (1, 2, 3):
            props = (root / f"node-{i}" / "server.properties").read_text()
            voters = re.search(r"controller\.quorum\.voters=(.*)", props).group(1)
            assert sorted(v.partition("@")[0] for v in voters.split(",")) == ["1", "2", "3"]
            assert f"node.id={i}\n" in props

        assert proc.stdin is not None
        proc.stdin.write("kill 3\n")
        proc.stdin.flush()
        assert _reply() == "node.3=killed"
        assert _closed(ports[2])
        assert kb.probe_metadata("127.0.0.1", ports[0]) >= 2  # the rest serve on
        proc.stdin.write("status\n")
        proc.stdin.flush()
        assert [_reply() for _ in range(3)] == ["node.1=running", "node.2=running",
                                                    "node.3=down"]
        proc.send_signal(signal.SIGUSR2)  # start what is down
        assert _reply() == "node.3=started"
        assert not _closed(ports[2])
        proc.stdin.write("start 3\n")  # already running: an error line, nothing stops
        proc.stdin.flush()
        assert _reply().startswith("error=node 3 is running")
        proc.send_signal(signal.SIGUSR1)  # kill the last running node
        assert _reply() == "node.3=killed"
        rc, err = _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 0, err
    assert list(tmpdir.iterdir()) == []  # data removed
    assert all(_closed(p) for p in ports)


def test_broker_command_refuses_zero_nodes():
    proc = subprocess.run([sys.executable, "-m", "streams", "broker", "--nodes", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert "--nodes must be 1 or more" in proc.stderr


@pytest.mark.integration
def test_a_killed_broker_starts_again_on_its_port_and_data_then_cleans_up(tmp_path: Path,
                                                                          monkeypatch):
    _need_jars()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # TMPDIR is read once per process otherwise
    try:
        broker = kb.LocalBroker().start()
        port, data, cluster_id = broker.port, broker.data_dir, broker.cluster_id
        broker.kill()
        assert _closed(port) and data is not None and data.is_dir()
        broker.start()
        assert (broker.port, broker.data_dir, broker.cluster_id) == (port, data, cluster_id)
        assert kb.probe_metadata("127.0.0.1", port) == 1
        broker.stop()
        assert not data.exists()
    finally:
        tempfile.tempdir = None
