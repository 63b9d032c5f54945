"""How every command connects to Kafka: bootstrap servers, SASL and TLS, as one frozen object.

Sources, per setting (the first that gives it wins):

    1. a command-line flag (`--bootstrap` only);
    2. the client properties file of `--kafka-config FILE` (`key=value` lines, `#` comments,
       the names Python and librdkafka clients use);
    3. the environment;
    4. the default (PLAINTEXT, 127.0.0.1:9092).

    file key                   environment variable       meaning
    bootstrap.servers          KAFKA_BOOTSTRAP_SERVERS    host:port[,host:port]
    security.protocol          KAFKA_SECURITY_PROTOCOL    PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    sasl.mechanism             KAFKA_SASL_MECHANISM       PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl.username              KAFKA_SASL_USERNAME
    sasl.password              KAFKA_SASL_PASSWORD
    ssl.ca.location            KAFKA_SSL_CAFILE           PEM CAs that sign the broker's certificate
                                                          (default: the system's CAs)
    ssl.certificate.location   KAFKA_SSL_CERTFILE         PEM client certificate (mutual TLS)
    ssl.key.location           KAFKA_SSL_KEYFILE          PEM key of that certificate

The file wins key by key, so a file that names only the bootstrap servers still gets the
credentials from the environment. The password never appears in `repr`, errors or logs.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

# field -> (client property, environment variable)
SOURCES: dict[str, tuple[str, str]] = {
    "bootstrap": ("bootstrap.servers", "KAFKA_BOOTSTRAP_SERVERS"),
    "security_protocol": ("security.protocol", "KAFKA_SECURITY_PROTOCOL"),
    "sasl_mechanism": ("sasl.mechanism", "KAFKA_SASL_MECHANISM"),
    "sasl_username": ("sasl.username", "KAFKA_SASL_USERNAME"),
    "sasl_password": ("sasl.password", "KAFKA_SASL_PASSWORD"),
    "ssl_cafile": ("ssl.ca.location", "KAFKA_SSL_CAFILE"),
    "ssl_certfile": ("ssl.certificate.location", "KAFKA_SSL_CERTFILE"),
    "ssl_keyfile": ("ssl.key.location", "KAFKA_SSL_KEYFILE"),
}
PROPERTY_NAMES = {prop: name for name, (prop, _env) in SOURCES.items()}
ENV_VARS = tuple(env for _prop, env in SOURCES.values())
CONFIG_ENV = "TRACKING_VALIDATOR_KAFKA_CONFIG"  # the --kafka-config file, from the environment


class KafkaConfigError(ValueError):
    """The Kafka client settings are unusable; the message says which and why."""


@dataclass(frozen=True)
class KafkaClientConfig:
    bootstrap: str = DEFAULT_BOOTSTRAP
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        protocol = self.security_protocol.strip().upper()
        object.__setattr__(self, "security_protocol", protocol)
        if protocol not in PROTOCOLS:
            raise KafkaConfigError(
                f"security.protocol {self.security_protocol!r} is not one of {', '.join(PROTOCOLS)}"
            )
        if not self.bootstrap.strip():
            raise KafkaConfigError("bootstrap.servers is empty")
        if self.sasl:
            mechanism = (self.sasl_mechanism or "PLAIN").strip().upper()
            object.__setattr__(self, "sasl_mechanism", mechanism)
            if mechanism not in MECHANISMS:
                raise KafkaConfigError(
                    f"sasl.mechanism {self.sasl_mechanism!r} is not one of {', '.join(MECHANISMS)}"
                )
            if not self.sasl_username or not self.sasl_password:
                raise KafkaConfigError(
                    f"security.protocol {protocol} needs sasl.username and sasl.password "
                    "(KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD)"
                )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise KafkaConfigError(
                "ssl.certificate.location and ssl.key.location go together (mutual TLS)"
            )
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise KafkaConfigError(f"{SOURCES[name][0]}: no such file: {path}")

    # -- what it is

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """Where and how, never the password: `SASL_SSL SCRAM-SHA-512 as alice to h:9093`."""
        how = self.security_protocol
        if self.sasl:
            how += f" {self.sasl_mechanism} as {self.sasl_username}"
        return f"{how} to {self.bootstrap}"

    # -- for the clients

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (hostname checked) for SSL and SASL_SSL, else None."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=self.ssl_cafile)
            if self.ssl_certfile:
                context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        except (ssl.SSLError, OSError) as exc:
            raise KafkaConfigError(f"cannot load the TLS files: {exc}") from exc
        return context

    def aiokafka_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaConsumer, AIOKafkaProducer and AIOKafkaAdminClient
        (bootstrap_servers is not among them)."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.sasl:
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.tls:
            kwargs["ssl_context"] = self.ssl_context()
        return kwargs

    def faust_credentials(self) -> Any:
        """`broker_credentials` for faust.App: SASLCredentials, SSLCredentials or None."""
        if self.security_protocol == "PLAINTEXT":
            return None
        import faust

        if self.sasl:
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context(),  # None for SASL_PLAINTEXT
            )
        return faust.SSLCredentials(self.ssl_context())

    def with_bootstrap(self, bootstrap: str | None) -> KafkaClientConfig:
        return self if not bootstrap else replace(self, bootstrap=bootstrap)

    # -- where it comes from

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        bootstrap: str | None = None,
    ) -> KafkaClientConfig:
        """Settings from `bootstrap` (a flag), then the file at `path`, then `env`."""
        env = os.environ if env is None else env
        values: dict[str, str] = {}
        for name, (_prop, var) in SOURCES.items():
            if (raw := env.get(var, "").strip()) != "":
                values[name] = raw
        if path is not None:
            values.update(read_properties(path))
        if bootstrap:
            values["bootstrap"] = bootstrap
        return cls(**values)


def read_properties(path: str | os.PathLike[str]) -> dict[str, str]:
    """field -> value from a client properties file; unknown keys are an error."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise KafkaConfigError(f"--kafka-config: {exc}") from exc
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            raise KafkaConfigError(f"{path}:{number}: expected key=value")
        if key not in PROPERTY_NAMES:
            raise KafkaConfigError(
                f"{path}:{number}: unknown key {key!r} (known: {', '.join(PROPERTY_NAMES)})"
            )
        values[PROPERTY_NAMES[key]] = value.strip()
    return values


def properties_text(config: KafkaClientConfig) -> str:
    """The client properties lines of `config` (password included: for a file the user keeps)."""
    lines = []
    for name, (prop, _env) in SOURCES.items():
        value = getattr(config, name)
        if value:
            lines.append(f"{prop}={value}\n")
    return "".join(lines)


def add_arguments(parser: Any) -> None:
    """`--kafka-config FILE` (and the environment it falls back to) for a command's parser."""
    parser.add_argument(
        "--kafka-config",
        metavar="FILE",
        default=os.environ.get(CONFIG_ENV) or None,
        help="Kafka client properties (bootstrap.servers, security.protocol, sasl.mechanism, "
        "sasl.username, sasl.password, ssl.ca.location, ssl.certificate.location, "
        f"ssl.key.location; env {CONFIG_ENV}); a key in the file wins over its environment "
        "variable "
        f"({', '.join(ENV_VARS)}); --bootstrap wins over both",
    )


