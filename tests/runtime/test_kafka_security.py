"""Kafka client security: settings from the environment and --kafka-config, and the commands
against a real SASL_SSL broker (`sasl_broker`: SCRAM-SHA-512, client certificate)."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from streams.local.broker import make_tls_material
from streams.runtime.kafka_security import KafkaClientConfig, KafkaConfigError, read_properties

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tls")
    make_tls_material(path, "127.0.0.1", "keystore-pass")
    return path


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------- sources and precedence


def test_environment_gives_every_setting(tls: Path) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9093,k2:9093",
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "scram-sha-256",
        "KAFKA_SASL_USERNAME": "alice",
        "KAFKA_SASL_PASSWORD": "s3cret",
        "KAFKA_SSL_CAFILE": str(tls / "ca.pem"),
        "KAFKA_SSL_CERTFILE": str(tls / "client.pem"),
        "KAFKA_SSL_KEYFILE": str(tls / "client.key"),
    }
    config = KafkaClientConfig.load(env=env)
    assert config == KafkaClientConfig(
        bootstrap="k1:9093,k2:9093", security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256", sasl_username="alice", sasl_password="s3cret",
        ssl_cafile=str(tls / "ca.pem"), ssl_certfile=str(tls / "client.pem"),
        ssl_keyfile=str(tls / "client.key"),
    )  # fmt: skip


def test_file_wins_over_environment_key_by_key_and_flag_wins_over_both(tmp_path: Path) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "env:9092",
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_USERNAME": "env-user",
        "KAFKA_SASL_PASSWORD": "env-pass",
    }
    path = write(
        tmp_path / "client.properties",
        "# a comment\n\nbootstrap.servers = file:9093\nsasl.username=file-user\n"
        "sasl.mechanism=SCRAM-SHA-512\n",
    )
    config = KafkaClientConfig.load(path, env=env)
    assert config.bootstrap == "file:9093"
    assert config.sasl_username == "file-user"
    assert config.sasl_mechanism == "SCRAM-SHA-512"
    assert config.security_protocol == "SASL_PLAINTEXT"  # from the environment
    assert config.sasl_password == "env-pass"  # from the environment
    assert KafkaClientConfig.load(path, env=env, bootstrap="flag:1").bootstrap == "flag:1"


def test_defaults_are_plaintext_on_localhost() -> None:
    config = KafkaClientConfig.load(env={})
    assert (config.bootstrap, config.security_protocol) == ("127.0.0.1:9092", "PLAINTEXT")
    assert config.aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert config.faust_credentials() is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour=blue\n", "unknown key 'colour'"),
        ("bootstrap.servers\n", "expected key=value"),
        ("security.protocol=TLS\n", "is not one of PLAINTEXT, SSL"),
        ("security.protocol=SASL_SSL\nsasl.mechanism=GSSAPI\nsasl.username=u\n"
         "sasl.password=p\n", "sasl.mechanism 'GSSAPI'"),
        ("security.protocol=SASL_SSL\nsasl.username=u\n", "needs sasl.username and sasl.password"),
        ("security.protocol=SSL\nssl.ca.location=/nonexistent/ca.pem\n", "no such file"),
        ("security.protocol=SSL\nssl.certificate.location=/etc/hostname\n", "go together"),
    ],
)  # fmt: skip
def test_bad_settings_give_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.properties", text)
    with pytest.raises(KafkaConfigError, match=message):
        KafkaClientConfig.load(path, env={})


def test_the_password_is_never_shown() -> None:
    config = KafkaClientConfig(
        security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="hunter2"
    )
    assert "hunter2" not in repr(config)
    assert "hunter2" not in config.describe()
    assert "hunter2" not in repr(config.faust_credentials())


def test_read_properties_maps_client_names(tmp_path: Path) -> None:
    path = write(tmp_path / "p", "ssl.ca.location=/a\n! bang comment\nsasl.password=x=y\n")
    assert read_properties(path) == {"ssl_cafile": "/a", "sasl_password": "x=y"}


# ---------------------------------------------------------------- what the clients get


def test_aiokafka_kwargs_for_sasl_ssl(tls: Path) -> None:
    config = KafkaClientConfig(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u",
        sasl_password="p", ssl_cafile=str(tls / "ca.pem"), ssl_certfile=str(tls / "client.pem"),
        ssl_keyfile=str(tls / "client.key"),
    )  # fmt: skip
    kwargs = config.aiokafka_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    # the throwaway CA is what the context trusts
    assert any("throwaway CA" in str(c.get("subject")) for c in context.get_ca_certs())


def test_faust_credentials_follow_the_protocol(tls: Path) -> None:
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    sasl_ssl = KafkaClientConfig(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_username="u",
        sasl_password="p", ssl_cafile=str(tls / "ca.pem"),
    )  # fmt: skip
    creds = sasl_ssl.faust_credentials()
    assert isinstance(creds, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("u", "p")
    assert isinstance(auth["ssl_context"], ssl.SSLContext)

    plain = KafkaClientConfig(security_protocol="SASL_PLAINTEXT", sasl_username="u",
                              sasl_password="p")  # fmt: skip
    auth = credentials_to_aiokafka_auth(plain.faust_credentials())
    assert (auth["security_protocol"], auth["sasl_mechanism"]) == ("SASL_PLAINTEXT", "PLAIN")

    tls_only = KafkaClientConfig(security_protocol="SSL", ssl_cafile=str(tls / "ca.pem"))
    assert isinstance(tls_only.faust_credentials(), faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(tls_only.faust_credentials())["security_protocol"] == "SSL"


def test_worker_config_takes_the_kafka_config_file(tmp_path: Path, tls: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.commands.cli import build_parser
    from streams.commands.worker import config_from_args

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "from-env")
    path = write(
        tmp_path / "c.properties",
        f"bootstrap.servers=file:9093\nsecurity.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
        f"sasl.username=w\nssl.ca.location={tls / 'ca.pem'}\n",
    )
    args = build_parser().parse_args(["worker", "--kafka-config", path])
    config = config_from_args(args)
    assert config.bootstrap == config.kafka.bootstrap == "file:9093"
    assert config.kafka.security_protocol == "SASL_SSL"
    assert config.kafka.sasl_password == "from-env"
    args = build_parser().parse_args(["worker", "--kafka-config", path, "--bootstrap", "f:1"])
    assert config_from_args(args).kafka.bootstrap == "f:1"
    # without a file: the environment, and the flag's bootstrap
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "env-user")
    config = config_from_args(build_parser().parse_args(["worker", "--bootstrap", "b:2"]))
    assert (config.bootstrap, config.kafka.bootstrap) == ("b:2", "b:2")
    assert (config.kafka.security_protocol, config.kafka.sasl_username) == (
        "SASL_PLAINTEXT", "env-user")  # fmt: skip


# ---------------------------------------------------------------- against a SASL_SSL broker


def cli(*args: str, timeout: float = 120.0, env: dict[str, str] | None = None,
        stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "streams", *args], capture_output=True, text=True,
        timeout=timeout, env=full_env, input=stdin.decode() if stdin else None,
    )  # fmt: skip


def properties(path: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in Path(path).read_text().splitlines() if line)


def assert_no_secret(sasl_broker: str, *outputs: str) -> None:
    password = properties(sasl_broker)["sasl.password"]
    for text in outputs:
        assert password not in text


@pytest.mark.integration
def test_simulate_import_export_over_sasl_ssl(sasl_broker: str, tmp_path: Path) -> None:
    suffix = os.urandom(4).hex()
    labels, scans, copy = f"labels-{suffix}", f"scans-{suffix}", f"copy-{suffix}"
    sim = cli("simulate", "--labels", "40", "--out", str(tmp_path / "sim"), "--kafka-config",
              sasl_broker, "--labels-topic", labels, "--scans-topic", scans)  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    expected = (tmp_path / "sim" / "labels.jsonl").read_bytes().splitlines()

    exported = tmp_path / "labels.export.jsonl"
    exp = cli("export", "--topic", labels, "--kafka-config", sasl_broker, str(exported))
    assert exp.returncode == 0, exp.stderr
    records = [orjson.loads(line) for line in exported.read_bytes().splitlines()]
    assert sorted(orjson.dumps(r["value"]) for r in records) == sorted(
        orjson.dumps(orjson.loads(line)) for line in expected
    )

    # import through the environment this time (no file), the password from KAFKA_SASL_*
    props = properties(sasl_broker)
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": props["bootstrap.servers"],
        "KAFKA_SECURITY_PROTOCOL": props["security.protocol"],
        "KAFKA_SASL_MECHANISM": props["sasl.mechanism"],
        "KAFKA_SASL_USERNAME": props["sasl.username"],
        "KAFKA_SASL_PASSWORD": props["sasl.password"],
        "KAFKA_SSL_CAFILE": props["ssl.ca.location"],
        "KAFKA_SSL_CERTFILE": props["ssl.certificate.location"],
        "KAFKA_SSL_KEYFILE": props["ssl.key.location"],
    }
    imp = cli("import", str(exported), "--topic", copy, env=env)
    assert imp.returncode == 0, imp.stderr
    again = cli("export", "--topic", copy, "--kafka-config", sasl_broker, "-")
    assert again.returncode == 0, again.stderr
    copied = [orjson.loads(line) for line in again.stdout.splitlines()]
    assert sorted((r["key"], orjson.dumps(r["value"])) for r in copied) == sorted(
        (r["key"], orjson.dumps(r["value"])) for r in records
    )
    assert_no_secret(sasl_broker, sim.stdout, sim.stderr, exp.stdout, exp.stderr, imp.stdout,
                     imp.stderr, again.stderr)  # fmt: skip


def _variant(sasl_broker: str, tmp_path: Path, name: str, tmp_ca: Path | None = None) -> str:
    props = properties(sasl_broker)
    if name == "wrong-password":
        props["sasl.password"] = "not-" + props["sasl.password"]
    elif name == "untrusted-ca":
        assert tmp_ca is not None
        props["ssl.ca.location"] = str(tmp_ca / "ca.pem")
    elif name == "no-client-certificate":
        del props["ssl.certificate.location"], props["ssl.key.location"]
    elif name == "plaintext":
        props = {"bootstrap.servers": props["bootstrap.servers"]}
    return write(tmp_path / f"{name}.properties",
                 "".join(f"{k}={v}\n" for k, v in props.items()))  # fmt: skip


@pytest.mark.integration
@pytest.mark.parametrize(
    ("variant", "command", "reason"),
    [
        ("wrong-password", "export", "authentication failed"),
        ("untrusted-ca", "import", "certificate is not trusted"),
        ("plaintext", "simulate", "closed or refused the connection"),
        ("wrong-password", "replay", "authentication failed"),
        ("no-client-certificate", "export", "closed or refused the connection"),
    ],
)
def test_a_refused_client_fails_fast_with_one_line(
    sasl_broker: str, tmp_path: Path, tls: Path, variant: str, command: str, reason: str
) -> None:
    """`tls` is another throwaway CA: the broker's certificate is not signed by it."""
    config = _variant(sasl_broker, tmp_path, variant, tls)
    data = tmp_path / "one.jsonl"
    data.write_text('{"type": "label.purchased"}\n')
    args = {
        "export": ["export", "--topic", "labels", "-"],
        "import": ["import", str(data), "--topic", "labels"],
        "simulate": ["simulate", "--labels", "10"],
        "replay": ["replay"],
    }[command]
    began = time.monotonic()
    result = cli(*args, "--kafka-config", config, timeout=60)
    took = time.monotonic() - began
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr
    assert took < 30
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{command}: cannot connect to Kafka") and reason in lines[0]
    assert result.stdout == ""
    assert_no_secret(sasl_broker, result.stderr)


@pytest.mark.integration
def test_broker_sasl_ssl_prints_a_usable_kafka_config(tmp_path: Path) -> None:
    """`broker --sasl-ssl` stdout, saved as is, is a --kafka-config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "broker", "--sasl-ssl"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(8)]
        assert [line.split("=", 1)[0] for line in lines] == [
            "bootstrap.servers", "security.protocol", "sasl.mechanism", "sasl.username",
            "sasl.password", "ssl.ca.location", "ssl.certificate.location", "ssl.key.location",
        ]  # fmt: skip
        assert lines[1:3] == ["security.protocol=SASL_SSL", "sasl.mechanism=SCRAM-SHA-512"]
        config = write(tmp_path / "client.properties", "\n".join(lines) + "\n")
        result = cli("export", "--topic", "absent", "--kafka-config", config, "-", timeout=60)
        # connected and authenticated: the only complaint is the missing topic
        assert result.returncode == 2
        assert result.stderr.strip() == "export: no such topic: absent"
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


@pytest.mark.integration
@pytest.mark.parametrize(
    ("variant", "log_format", "reason"),
    [
        ("wrong-password", "json", "authentication failed"),
        ("untrusted-ca", "text", "certificate is not trusted"),
        ("plaintext", "text", "closed or refused the connection"),
    ],
)
def test_a_refused_worker_exits_2_with_one_line(
    sasl_broker: str, tmp_path: Path, tls: Path, variant: str, log_format: str, reason: str
) -> None:
    config = _variant(sasl_broker, tmp_path, variant, tls)
    began = time.monotonic()
    result = cli("worker", "--kafka-config", config, "--log-format", log_format,
                 "--state-dir", str(tmp_path / "state"), timeout=60)  # fmt: skip
    assert time.monotonic() - began < 30
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = orjson.loads(lines[0])["message"] if log_format == "json" else lines[0]
    assert "worker: cannot connect to Kafka" in line and reason in line
    assert result.stdout == ""
    assert_no_secret(sasl_broker, result.stderr)


def test_the_hint_names_the_likely_cause() -> None:
    from streams.runtime.kafka_io import explain

    config = KafkaClientConfig(bootstrap="h:1")
    cases = {
        'Unable connect to "h:1": [Errno 111] Connect call failed': "is the broker up?",
        "KafkaConnectionError: Connection at h:1 closed": "expect TLS or SASL?",
        "[Error 58] SaslAuthenticationFailed: ...": "authentication failed",
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed": "not trusted",
        "[SSL: WRONG_VERSION_NUMBER] wrong version number": "may not speak TLS",
    }
    for cause, hint in cases.items():
        assert hint in explain(cause, config), cause


def test_stream_config_from_env_reads_the_kafka_config_file(tmp_path: Path) -> None:
    from streams.runtime.stream_config import StreamConfig

    path = write(tmp_path / "c.properties", "bootstrap.servers=file:9093\n"
                 "security.protocol=SASL_PLAINTEXT\nsasl.username=u\n")  # fmt: skip
    config = StreamConfig.from_env({"TRACKING_VALIDATOR_KAFKA_CONFIG": path,
                                    "KAFKA_BOOTSTRAP_SERVERS": "env:9092",
                                    "KAFKA_SASL_PASSWORD": "p"})  # fmt: skip
    assert (config.bootstrap, config.kafka.security_protocol) == ("file:9093", "SASL_PLAINTEXT")
    assert config.kafka.aiokafka_kwargs()["sasl_plain_password"] == "p"
    with pytest.raises(ValueError, match="log format"):
        StreamConfig.from_env({"TRACKING_VALIDATOR_LOG_FORMAT": "xml"})


@pytest.mark.integration
def test_a_worker_runs_end_to_end_over_sasl_ssl(sasl_broker: str, tmp_path: Path) -> None:
    """The demo's worker (ingest's aiokafka clients, Faust's stage, the producer) against the
    SASL_SSL broker: every alert the sample should raise arrives, and no secret is shown."""
    props = properties(sasl_broker)
    result = cli("demo", "--bootstrap", props["bootstrap.servers"], "--kafka-config",
                 sasl_broker, "--exit-after-sample", "--timeout", "120",
                 "--worker-log", str(tmp_path / "worker.log"), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"all \d+ alerts and \d+ incidents? expected arrived",
                     result.stdout + result.stderr)
    assert_no_secret(sasl_broker, result.stdout, result.stderr,
                     (tmp_path / "worker.log").read_text())
