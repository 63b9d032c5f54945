"""A real, local, single-node Apache Kafka broker (KRaft) run from the official jars.

`fetch_kafka()` downloads `org.apache.kafka:kafka_2.13` and a log4j2 backend once from Maven
Central with `mvn` into a cache directory; `LocalBroker` formats a temporary data directory and
runs `kafka.Kafka` with `java` as a combined broker+controller node on free 127.0.0.1 ports.

    with LocalBroker() as broker:
        print(broker.bootstrap_servers)   # 127.0.0.1:PORT

Needs Java 17+ and Maven (for the first fetch only). Nothing here is a mock: the tests, the
`broker` command and the demo all talk to this real broker over TCP.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "KAFKA_VERSION",
    "LOG4J_VERSION",
    "BrokerError",
    "LocalBroker",
    "cache_base",
    "fetch_kafka",
    "find_java",
    "find_mvn",
    "java_major_version",
    "kafka_dir",
    "wait_for_metadata",
]

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
# Kafka 4.1 ships log4j-core 2.24.3 and slf4j-api 1.7.36: the slf4j 1.x binding is
# log4j-slf4j-impl (log4j-slf4j2-impl would bind slf4j 2.x and be ignored by 1.7).
LOG4J_VERSION = "2.24.3"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MIN_JAVA = 17
CACHE_ENV = "TRACKING_VALIDATOR_KAFKA_CACHE"
COMPLETE_MARKER = ".complete"

JAVA_HINT = (
    f"install a Java {MIN_JAVA}+ JDK (apt-get install openjdk-17-jdk-headless) "
    "or point JAVA_HOME at one"
)
MVN_HINT = "install Maven to fetch the Kafka jars (apt-get install maven)"


class BrokerError(RuntimeError):
    """The local broker cannot be fetched, started or reached; the message says why."""


# ---------------------------------------------------------------- java / maven


def find_java() -> str:
    """Path of the `java` to use: $JAVA_HOME/bin/java when set, else `java` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if not found:
        raise BrokerError(f"java not found: {JAVA_HINT}")
    return found


def _parse_java_major(text: str) -> int | None:
    # `openjdk version "17.0.15" 2025-04-15`, `java version "1.8.0_402"`, `openjdk version "21"`
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):  # 1.8 -> 8
        major = int(match.group(2))
    return major


def java_major_version(java: str | None = None) -> int:
    """Major version of `java` (17 for 17.0.15); raises BrokerError when it can't be run."""
    java = java or find_java()
    try:
        proc = subprocess.run(
            [java, "-version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"cannot run {java} -version ({exc}): {JAVA_HINT}") from exc
    major = _parse_java_major(proc.stderr + proc.stdout)
    if proc.returncode != 0 or major is None:
        raise BrokerError(f"{java} -version failed or is unreadable: {JAVA_HINT}")
    return major


def check_java() -> str:
    """The java executable, checked to be Java 17 or newer."""
    java = find_java()
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise BrokerError(f"{java} is Java {major}, Kafka needs {MIN_JAVA}+: {JAVA_HINT}")
    return java


def find_mvn() -> str:
    found = shutil.which("mvn")
    if not found:
        raise BrokerError(f"mvn not found: {MVN_HINT}")
    return found


# ---------------------------------------------------------------- fetching the jars


def cache_base() -> Path:
    """Base directory of the jar cache: $TRACKING_VALIDATOR_KAFKA_CACHE, else
    ~/.cache/tracking-validator/kafka (honouring XDG_CACHE_HOME)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "tracking-validator" / "kafka"


def kafka_dir(
    version: str = KAFKA_VERSION, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Where the jars of `version` live (or would): <cache base>/<version>."""
    base = Path(cache_dir) if cache_dir is not None else cache_base()
    return base / version


def _is_complete(path: Path) -> bool:
    return (path / COMPLETE_MARKER).is_file() and any((path / "libs").glob("kafka_2.13-*.jar"))


def _pom(version: str) -> str:
    deps = [
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
    ]
    body = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tracking-validator</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{body}
  </dependencies>
</project>
"""


def _tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a log, preceded by its first error line when that is older."""
    try:
        all_lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    tail = all_lines[-lines:]
    first_error = next(
        (ln for ln in all_lines if " ERROR " in ln or "Exception" in ln or "[ERROR]" in ln), None
    )
    if first_error is not None and first_error not in tail:
        tail = [first_error, "...", *tail]
    return "\n".join(tail)


def fetch_kafka(
    version: str = KAFKA_VERSION, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Make sure the Kafka `version` jars are cached; return the version's cache directory
    (its `libs/` holds the classpath). Downloads once with `mvn`, atomically: the jars are
    copied into a temporary sibling directory that is renamed into place when complete."""
    target = kafka_dir(version, cache_dir)
    if _is_complete(target):
        return target
    mvn = find_mvn()
    base = target.parent
    base.mkdir(parents=True, exist_ok=True)
    # One fetch at a time per cache; a second process waits and then finds it done.
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_complete(target):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.partial-", dir=base))
        try:
            (tmp / "pom.xml").write_text(_pom(version))
            mvn_log = tmp / "fetch.log"
            log.info("fetching Kafka %s jars from Maven Central into %s", version, target)
            cmd = [
                mvn,
                "-B",
                "-f",
                str(tmp / "pom.xml"),
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={tmp / 'libs'}",
            ]
            with open(mvn_log, "wb") as out:
                rc = _run_logged(cmd, out, timeout=900)
            if rc != 0 or not any((tmp / "libs").glob("kafka_2.13-*.jar")):
                kept = base / f"fetch-{version}-failed.log"
                shutil.copyfile(mvn_log, kept)
                raise BrokerError(
                    f"downloading Kafka {version} with mvn failed (exit {rc}); "
                    f"check network access to Maven Central; log: {kept}\n{_tail(kept, 15)}"
                )
            (tmp / COMPLETE_MARKER).write_text(f"kafka_2.13 {version}\n")
            if target.exists():  # an incomplete leftover (an older, non-atomic layout)
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------- wire-level readiness probe


def _kafka_request(
    sock: socket.socket, api_key: int, version: int, corr: int, body: bytes
) -> bytes:
    client = b"tracking-validator"
    header = struct.pack(">hhih", api_key, version, corr, len(client)) + client
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    data = _recv_exact(sock, size)
    if struct.unpack(">i", data[:4])[0] != corr:
        raise BrokerError("kafka probe: correlation id mismatch")
    return data[4:]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def probe_metadata(host: str, port: int, timeout: float = 5.0) -> int:
    """One ApiVersions + Metadata round trip over the Kafka protocol; returns the number of
    live brokers the cluster reports (0 while the broker is still fenced)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        # ApiVersions v0: no body; response: error_code, [api_key, min, max]
        data = _kafka_request(sock, 18, 0, 1, b"")
        error, count = struct.unpack(">hi", data[:6])
        if error:
            raise BrokerError(f"kafka probe: ApiVersions error {error}")
        ranges = {}
        for i in range(count):
            key, lo, hi = struct.unpack(">hhh", data[6 + 6 * i : 12 + 6 * i])
            ranges[key] = (lo, hi)
        lo, hi = ranges.get(3, (0, 0))
        version = max(lo, 4)  # v4..v8 share the non-flexible layout parsed below
        if version > min(hi, 8):
            raise BrokerError(f"kafka probe: no usable Metadata version in {lo}..{hi}")
        # Metadata v4+: topics = null (all), allow_auto_topic_creation = false
        data = _kafka_request(sock, 3, version, 2, struct.pack(">ib", -1, 0))
        # throttle_time_ms, then the brokers array
        (brokers,) = struct.unpack(">i", data[4:8])
        return brokers


def wait_for_metadata(
    bootstrap_servers: str, timeout: float = 60.0, alive: Callable[[], bool] | None = None
) -> None:
    """Wait until the broker at `host:port` answers a Metadata request listing a broker."""
    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BrokerError("broker process exited while waiting for metadata")
        try:
            if probe_metadata(host, int(port)) > 0:
                return
            last = BrokerError("metadata lists no broker yet")
        except (OSError, BrokerError, struct.error) as exc:
            last = exc
        time.sleep(0.2)
    raise BrokerError(
        f"broker {bootstrap_servers} did not serve metadata in {timeout:.0f}s: {last}"
    )


# ---------------------------------------------------------------- the broker process


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _run_logged(cmd: list[str], out: IO[bytes], timeout: float) -> int:
    """Run `cmd` with its output appended to the log `out`: its exit code, -1 on timeout."""
    try:
        return subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
        ).returncode
    except subprocess.TimeoutExpired:
        return -1


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).

    Never one that starts with `-`: StorageTool's argument parser would read it as an option
    (`--cluster-id: expected one argument`), which failed one start in 64.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def server_properties(
    *,
    host: str,
    port: int,
    controller_port: int,
    log_dirs: Path,
    node_id: int = 1,
    extra: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """The server.properties of a single combined KRaft node tuned for tests."""
    props: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.voters": f"{node_id}@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dirs),
        "num.partitions": 1,
        "auto.create.topics.enable": "false",
        "group.initial.rebalance.delay.ms": 0,
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 4,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "min.insync.replicas": 1,
        "num.network.threads": 2,
        "num.io.threads": 4,
        "num.recovery.threads.per.data.dir": 1,
        "log.segment.bytes": 64 * 1024 * 1024,
        # A new segment's two index files are sparse files of this size, mmapped; the first
        # index write faults one in, and the kernel's readahead (8 MB on some VMs) zero-fills
        # that much page cache in the request thread. At the 10 MB default that stalled
        # produce and fetch ~0.3-0.7 s whenever new topics took their first records (the
        # tests' and benchmarks' pattern). A 64 MB segment fills at most 192 KB of index
        # (an entry per 4 KB of log, 8 + 12 bytes), so 1 MB never rolls a segment early.
        "log.index.size.max.bytes": 1024 * 1024,
        "log.retention.hours": 168,
        "delete.topic.enable": "true",
    }
    if extra:
        props.update(extra)
    return {k: str(v) for k, v in props.items()}


LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.clients.name = org.apache.kafka.clients
logger.clients.level = warn
logger.network.name = kafka.network
logger.network.level = warn
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = warn
"""

STARTED_LINE = "Kafka Server started"

# Brokers alive in this process: stopped at interpreter exit whatever happened to the tests.
_LIVE: set[LocalBroker] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _LIVE_LOCK:
        brokers = list(_LIVE)
    for broker in brokers:
        with contextlib.suppress(Exception):
            broker.stop(timeout=5)


TEMP_PREFIX = "tracking-validator-kafka-"
OWNER_FILE = "owner.pids"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_data_dirs(min_age: float = 60.0) -> None:
    """Remove temporary data dirs left by runs that were killed outright (SIGKILL leaves no
    chance to clean up): those whose owning Python process and JVM are both gone."""
    now = time.time()
    for path in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        try:
            pids = [int(x) for x in (path / OWNER_FILE).read_text().split()]
            if not pids or now - path.stat().st_mtime < min_age:
                continue
        except (OSError, ValueError):
            continue
        if not any(_pid_alive(pid) for pid in pids):
            shutil.rmtree(path, ignore_errors=True)


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def _read_cluster_id(log_dirs: Path) -> str | None:
    meta = log_dirs / "meta.properties"
    if not meta.is_file():
        return None
    for line in meta.read_text().splitlines():
        if line.startswith("cluster.id="):
            return line.split("=", 1)[1].strip()
    return None


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    """Linux: the JVM gets SIGTERM when the Python thread that started it dies, even by
    SIGKILL, so an abruptly killed test run leaves no broker behind."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG



# ---------------------------------------------------------------- SASL_SSL (broker --sasl-ssl)

SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_USER = "tracking-validator"
_CERT_DAYS = 7


def _openssl(args: list[str], cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if not openssl:
        raise BrokerError("openssl not found: it makes the throwaway CA (apt-get install openssl)")
    proc = subprocess.run(
        [openssl, *args], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    if proc.returncode != 0:
        raise BrokerError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")


def _issue(tls: Path, name: str, subject: str, extensions: str) -> None:
    """`name`.key and `name`.pem: an EC key and a certificate signed by the CA in `tls`."""
    (tls / f"{name}.ext").write_text(extensions)
    _openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject], tls)
    _openssl(["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days",
              str(_CERT_DAYS), "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem"],
             tls)  # fmt: skip


def make_tls_material(tls: Path, host: str, keystore_password: str) -> None:
    """A throwaway CA (ca.pem), the broker's key and certificate for `host` in a PKCS12
    keystore (server.p12), and a client key and certificate (client.key, client.pem), all
    made here with openssl: nothing is downloaded, nothing outlives the data dir."""
    tls.mkdir(parents=True, exist_ok=True)
    _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", str(_CERT_DAYS),
              "-subj", "/CN=tracking-validator throwaway CA",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign",
              "-addext", "subjectKeyIdentifier=hash"], tls)  # fmt: skip
    san = "IP:127.0.0.1,DNS:localhost" + (f",DNS:{host}" if host not in ("127.0.0.1",
                                                                       "localhost") else "")
    common = (
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment,keyAgreement\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _issue(tls, "server", "/CN=localhost",
           f"{common}extendedKeyUsage=serverAuth\nsubjectAltName={san}\n")  # fmt: skip
    _issue(tls, "client", f"/CN={SCRAM_USER}", f"{common}extendedKeyUsage=clientAuth\n")
    _openssl(["pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key",
              "-certfile", "ca.pem", "-name", "kafka", "-out", "server.p12",
              "-passout", f"pass:{keystore_password}"], tls)  # fmt: skip
    for path in tls.iterdir():
        path.chmod(0o600)


def sasl_ssl_properties(
    *, host: str, port: int, internal_port: int, controller_port: int, tls: Path,
    keystore_password: str,
) -> dict[str, object]:  # fmt: skip
    """server.properties entries for a SASL_SSL (SCRAM-SHA-512, client certificate
    required) listener on `port`; the broker and the controller talk PLAINTEXT on loopback."""
    return {
        "listeners": f"SASL_SSL://{host}:{port},PLAINTEXT://127.0.0.1:{internal_port},"
        f"CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"SASL_SSL://{host}:{port},PLAINTEXT://127.0.0.1:{internal_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL_SSL:SASL_SSL",
        "inter.broker.listener.name": "PLAINTEXT",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": tls / "server.p12",
        "ssl.keystore.password": keystore_password,
        "ssl.key.password": keystore_password,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": tls / "ca.pem",
        # a SASL_SSL listener asks for client certificates only when told so by name
        "listener.name.sasl_ssl.ssl.client.auth": "required",
    }  # fmt: skip


class LocalBroker:
    """A single-node KRaft Kafka broker in a child JVM. Use as a context manager, or call
    `start()` / `stop()`. `bootstrap_servers` is `127.0.0.1:PORT` once started.

    With `sasl_ssl=True` that port is a SASL_SSL listener (SCRAM-SHA-512 and a client
    certificate, both made at start) and `client_properties` holds what a client needs."""

    def __init__(
        self,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        keep_data: bool = False,
        kafka_version: str = KAFKA_VERSION,
        cache_dir: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        start_timeout: float = 120.0,
        heap: tuple[str, str] = ("256m", "512m"),
        config: Mapping[str, object] | None = None,
        sasl_ssl: bool = False,
        node_id: int = 1,
        cluster_id: str | None = None,
        quorum_voters: str | None = None,
        jvm_options: Sequence[str] = (),
    ) -> None:
        self.sasl_ssl = sasl_ssl
        # a node of a LocalCluster: its id, the cluster's id and every voter of the quorum
        # (`1@host:port,2@host:port,...`); alone, the node is the only voter
        self.node_id = node_id
        self.quorum_voters = quorum_voters
        self.jvm_options = list(jvm_options)
        self.internal_port: int | None = None  # PLAINTEXT on loopback (sasl_ssl only)
        self.client_properties: dict[str, str] = {}
        self.host = host
        self.port = port
        self.controller_port = controller_port
        self.kafka_version = kafka_version
        self.cache_dir = cache_dir
        self.start_timeout = start_timeout
        self.heap = heap
        self.extra_config = dict(config or {})
        self._given_data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.keep_data = keep_data or data_dir is not None
        self.data_dir: Path | None = self._given_data_dir
        self.log_path: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.cluster_id: str | None = cluster_id
        self.started_in: float | None = None

    # -- properties

    @property
    def bootstrap_servers(self) -> str:
        if self.process is None or self.port is None:
            raise BrokerError("broker not started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def poll(self) -> int | None:
        """None while the JVM runs, else its exit code."""
        return self.process.poll() if self.process else None

    # -- lifecycle

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalBroker:
        """Start the JVM and wait until it serves metadata."""
        began = time.monotonic()
        self.launch()
        try:
            self._wait_ready(began)
        except BaseException:
            self._kill()
            raise
        self.started_in = time.monotonic() - began
        log.info(
            "kafka %s node %d ready at %s in %.1fs",
            self.kafka_version,
            self.node_id,
            self.bootstrap_servers,
            self.started_in,
        )
        return self

    def launch(self) -> LocalBroker:
        """Format the storage (once) and start the JVM without waiting for it: the nodes of a
        cluster are launched together, as none is ready before a majority of the quorum is."""
        if self.process is not None:
            raise BrokerError("broker already started")
        java = check_java()
        libs = fetch_kafka(self.kafka_version, self.cache_dir) / "libs"
        self._prepare_dirs()
        assert self.data_dir is not None and self.log_path is not None
        try:
            self._pick_ports()
            kraft_dir = self.data_dir / "kraft-logs"
            kraft_dir.mkdir(exist_ok=True)
            extra = dict(self.extra_config)
            scram: list[str] = []
            if self.sasl_ssl:
                extra = {**self._prepare_sasl_ssl(), **extra}
                password = self.client_properties["sasl.password"]
                scram = ["--add-scram",
                         f"{SCRAM_MECHANISM}=[name={SCRAM_USER},password={password}]"]  # fmt: skip
            if self.quorum_voters:
                extra = {"controller.quorum.voters": self.quorum_voters, **extra}
            props = server_properties(
                host=self.host,
                port=self.port,
                controller_port=self.controller_port,
                log_dirs=kraft_dir,
                node_id=self.node_id,
                extra=extra,
            )
            cfg = self.data_dir / "server.properties"
            _write_properties(cfg, props)
            log4j = self.data_dir / "log4j2.properties"
            log4j.write_text(LOG4J2_PROPERTIES)
            jvm = [
                java,
                f"-Xms{self.heap[0]}",
                f"-Xmx{self.heap[1]}",
                "-XX:+UseG1GC",
                *self.jvm_options,
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}",
                f"-Dkafka.logs.dir={self.data_dir / 'logs'}",
                "-cp",
                f"{libs}/*",
            ]
            self.cluster_id = (_read_cluster_id(kraft_dir) or self.cluster_id
                               or new_cluster_id())
            self._format_storage(jvm, cfg, scram)
            self._spawn([*jvm, "kafka.Kafka", str(cfg)])
        except BaseException:
            self._kill()
            raise
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until a launched node serves metadata (BrokerError if it exits or times out)."""
        began = time.monotonic() - self.start_timeout + (timeout or self.start_timeout)
        self._wait_ready(began)

    def _prepare_dirs(self) -> None:
        if self._given_data_dir is not None:
            self._given_data_dir.mkdir(parents=True, exist_ok=True)
            self.data_dir = self._given_data_dir
        elif self.data_dir is not None and self.data_dir.is_dir():  # a restart after kill()
            pass
        else:
            sweep_stale_data_dirs()
            self.data_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
            (self.data_dir / OWNER_FILE).write_text(f"{os.getpid()}\n")
        self.log_path = self.data_dir / "broker.log"

    def _pick_ports(self) -> None:
        if self.port is None:
            self.port = free_port(self.host)
        elif not _port_is_free(self.host, self.port):
            raise BrokerError(f"port {self.host}:{self.port} is already in use")
        if self.controller_port is None:
            while True:
                self.controller_port = free_port(self.host)
                if self.controller_port != self.port:
                    break

    def _prepare_sasl_ssl(self) -> dict[str, object]:
        """TLS material and a SCRAM password; server.properties entries for them."""
        import secrets

        assert self.data_dir is not None and self.port is not None
        while self.internal_port in (None, self.port, self.controller_port):
            self.internal_port = free_port("127.0.0.1")
        tls = self.data_dir / "tls"
        keystore_password = secrets.token_urlsafe(18)
        # The SCRAM credential is stored when the storage is formatted, once per data dir: a
        # kept --data-dir keeps its password (the TLS material is made anew each start).
        saved = self.data_dir / "scram.password"
        if not saved.is_file():
            saved.write_text(secrets.token_urlsafe(18))
            saved.chmod(0o600)
        make_tls_material(tls, self.host, keystore_password)
        self.client_properties = {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": SCRAM_USER,
            "sasl.password": saved.read_text().strip(),
            "ssl.ca.location": str(tls / "ca.pem"),
            "ssl.certificate.location": str(tls / "client.pem"),
            "ssl.key.location": str(tls / "client.key"),
        }
        return sasl_ssl_properties(
            host=self.host, port=self.port, internal_port=self.internal_port,
            controller_port=self.controller_port, tls=tls, keystore_password=keystore_password,
        )  # fmt: skip

    @property
    def probe_servers(self) -> str:
        """A PLAINTEXT address of this broker for the wire-level readiness probe."""
        if self.sasl_ssl and self.internal_port is not None:
            return f"127.0.0.1:{self.internal_port}"
        return self.bootstrap_servers

    def _format_storage(self, jvm: list[str], cfg: Path, extra: list[str] | None = None) -> None:
        assert self.log_path is not None
        cmd = [
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            str(self.cluster_id),
            "-c",
            str(cfg),
            "--ignore-formatted",
            *(extra or []),
        ]
        shown = " ".join(cmd)
        if password := self.client_properties.get("sasl.password"):
            shown = shown.replace(password, "***")  # the log outlives nothing, yet: no secrets
        with open(self.log_path, "ab") as out:
            out.write(f"$ {shown}\n".encode())
            out.flush()
            rc = _run_logged(cmd, out, timeout=120)
        if rc != 0:
            raise BrokerError(
                f"formatting the Kafka storage failed (exit {rc}); log: {self.log_path}\n"
                f"{_tail(self.log_path)}"
            )

    def _spawn(self, cmd: list[str]) -> None:
        assert self.log_path is not None
        out = open(self.log_path, "ab")  # noqa: SIM115 - kept open by the child only
        try:
            out.write(f"$ {' '.join(cmd)}\n".encode())
            out.flush()
            main_thread = threading.current_thread() is threading.main_thread()
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # own process group: killpg stops it whole
                preexec_fn=_set_parent_death_signal if main_thread else None,
            )
        finally:
            out.close()
        with _LIVE_LOCK:
            _LIVE.add(self)
        owner = self.data_dir / OWNER_FILE
        if owner.exists():
            with open(owner, "a") as f:
                f.write(f"{self.process.pid}\n")

    def _wait_ready(self, began: float) -> None:
        assert self.log_path is not None and self.process is not None
        deadline = began + self.start_timeout
        while True:
            rc = self.process.poll()
            if rc is not None:
                raise BrokerError(
                    f"kafka exited with code {rc} while starting; log: {self.log_path}\n"
                    f"{_tail(self.log_path)}"
                )
            try:
                text = self.log_path.read_text(errors="replace")
            except OSError:
                text = ""
            if STARTED_LINE in text:
                break
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"kafka did not start within {self.start_timeout:.0f}s; "
                    f"log: {self.log_path}\n{_tail(self.log_path)}"
                )
            time.sleep(0.1)
        try:
            wait_for_metadata(
                self.probe_servers,
                timeout=max(5.0, deadline - time.monotonic()),
                alive=lambda: self.process is not None and self.process.poll() is None,
            )
        except BrokerError as exc:
            raise BrokerError(f"{exc}; log: {self.log_path}\n{_tail(self.log_path)}") from exc

    def kill(self) -> None:
        """SIGKILL the JVM (a crash: no clean shutdown) and keep the data dir, so that
        `start()` brings the same node back on the same ports and data."""
        self._kill()

    def _kill(self) -> None:
        """Stop the JVM at once (start failed); keep the data dir for its log."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        with _LIVE_LOCK:
            _LIVE.discard(self)
        self.process = None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the broker's process group, SIGKILL it after `timeout` seconds, then
        remove the data directory unless it was given or `keep_data` is set. Idempotent."""
        proc = self.process
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    log.warning("kafka did not stop within %.0fs; killing it", timeout)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            with _LIVE_LOCK:
                _LIVE.discard(self)
            self.process = None
        if self.data_dir is not None and not self.keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
