"""docker/: no container engine runs here, so the Dockerfile, compose.yaml and prometheus.yml
are parsed and checked against the code: every variable they set is one the code reads, and
ports, hosts and paths agree."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml  # pyyaml, a dev dependency: missing, the test fails instead of skipping

from streams.commands.cli import COMMANDS
from streams.runtime.stream_config import StreamConfig

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
# set for the Python interpreter itself, not for our code
PYTHON_RUNTIME = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR",
                  "PIP_DISABLE_PIP_VERSION_CHECK"}  # fmt: skip


# ---------------------------------------------------------------- parsing


def dockerfile_stages(path: Path = DOCKER / "Dockerfile") -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments); continuation lines
    joined, comments dropped."""
    stages: list[list[tuple[str, str]]] = []
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        instruction, _, rest = logical.partition(" ")
        logical = ""
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, rest in stage:
        if instruction == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def one(stage: list[tuple[str, str]], instruction: str) -> str:
    found = [rest for ins, rest in stage if ins == instruction]
    assert len(found) == 1, f"{instruction}: {found}"
    return found[0]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "prometheus.yml").read_text())


def workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if s.get("command") == ["worker"]}


def variables_the_code_reads() -> set[str]:
    """StreamConfig's variables (one per field, as StreamConfig.from_env reads them), and every
    other name that appears as a literal in the package's source."""
    from streams.runtime.stream_config import ENV_NAMES

    names = {
        ENV_NAMES.get(name, f"TRACKING_VALIDATOR_{name.upper()}")
        for name in StreamConfig.__dataclass_fields__
        if name not in ("settings", "kafka")
    }
    source = "\n".join(p.read_text() for p in (REPO / "streams").rglob("*.py"))
    names |= set(re.findall(r'"((?:TRACKING_VALIDATOR|KAFKA)_[A-Z_]+)"', source))
    # Settings.from_env reads ENV_PREFIX + "NAME"
    names |= {f"TRACKING_VALIDATOR_{n}" for n in re.findall(r'get\("([A-Z_]+)"\)', source)}
    names |= {f"TRACKING_VALIDATOR_{n}" for n in re.findall(r'\(\s*"([A-Z_]+)",\s*"[a-z_]+"\)',
                                                               source)}  # fmt: skip
    return names


# ---------------------------------------------------------------- the image


def test_image_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    user = one(final, "USER")
    assert user not in ("root", "0")
    # the user exists: created in the final stage with that uid (or name)
    created = " ".join(rest for ins, rest in final if ins == "RUN")
    assert "useradd" in created and (f"--uid {user}" in created or f" {user}" in created)
    # no build tools in the final stage: it copies the venv from the build stage
    assert any(ins == "COPY" and rest.startswith("--from=") for ins, rest in final)
    assert not any(ins == "RUN" and "pip install" in rest for ins, rest in final)


def test_image_sets_only_variables_the_code_reads() -> None:
    read = variables_the_code_reads()
    for stage in dockerfile_stages():
        for name in env_of(stage):
            assert name in read or name in PYTHON_RUNTIME, f"the code does not read {name}"


def test_image_settings_parse_and_agree_with_the_healthcheck() -> None:
    final = dockerfile_stages()[-1]
    env = env_of(final)
    config = StreamConfig.from_env(env)  # every setting it gives parses
    assert config.web_port == int(env["TRACKING_VALIDATOR_WEB_PORT"]) > 0
    assert config.log_format == env["TRACKING_VALIDATOR_LOG_FORMAT"]
    assert one(final, "EXPOSE") == str(config.web_port)
    health = one(final, "HEALTHCHECK")
    cmd = json.loads(health.split(" CMD ", 1)[1])
    script = cmd[-1]
    assert "/health" in script and "TRACKING_VALIDATOR_WEB_PORT" in script
    # the state directory is on the volume
    volume = json.loads(one(final, "VOLUME"))
    assert any(env["TRACKING_VALIDATOR_STATE_DIR"].startswith(v) for v in volume)
    # the contract the code loads is copied to where TRACKING_VALIDATOR_SCHEMAS points
    copies = [rest.split() for ins, rest in final if ins == "COPY"]
    assert ["schemas", env["TRACKING_VALIDATOR_SCHEMAS"]] in copies
    assert (REPO / "schemas" / "carriers").is_dir()
    entry = json.loads(one(final, "ENTRYPOINT"))
    assert entry == ["tracking-validator"]
    assert json.loads(one(final, "CMD"))[0] in COMMANDS


def test_build_stage_copies_what_exists() -> None:
    for stage in dockerfile_stages():
        for ins, rest in stage:
            if ins == "COPY" and not rest.startswith("--from="):
                *sources, _dest = rest.split()
                for source in sources:
                    assert (REPO / source).exists(), source


# ---------------------------------------------------------------- compose and prometheus


def test_compose_runs_kafka_two_workers_of_one_group_and_prometheus(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "prom/prometheus" in services["prometheus"]["image"]
    found = workers(compose)
    assert len(found) == 2
    app_ids = {s["environment"]["TRACKING_VALIDATOR_APP_ID"] for s in found.values()}
    assert len(app_ids) == 1  # one consumer group
    volumes = [s["volumes"][0].split(":")[0] for s in found.values()]
    assert len(set(volumes)) == 2  # each worker its own state
    for name, service in found.items():
        build = service["build"]
        assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (
            DOCKER / "Dockerfile").resolve()  # fmt: skip
        env = service["environment"]
        # --web-host: the name the others (and Prometheus) reach it by
        assert env["TRACKING_VALIDATOR_WEB_HOST"] == name
        assert StreamConfig.from_env({k: str(v) for k, v in env.items()}).web_host == name
        state = env["TRACKING_VALIDATOR_STATE_DIR"]
        assert state.startswith(service["volumes"][0].split(":")[1])
        container_ports = {p.split(":")[-1] for p in service["ports"]}
        assert container_ports == {str(env["TRACKING_VALIDATOR_WEB_PORT"])}


def test_compose_sets_only_variables_the_code_reads(compose: dict[str, Any]) -> None:
    read = variables_the_code_reads()
    for name, service in workers(compose).items():
        for variable in service["environment"]:
            assert variable in read, f"{name}: the code does not read {variable}"
        # and what they say parses
        StreamConfig.from_env({k: str(v) for k, v in service["environment"].items()})


def test_workers_reach_kafka_on_a_listener_it_advertises(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]["environment"]
    advertised = {
        f"{host}:{port}"
        for item in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
        for host, port in [item.split("://", 1)[1].rsplit(":", 1)]
    }
    for service in workers(compose).values():
        bootstrap = service["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
        assert bootstrap in advertised
        assert "kafka" in service["depends_on"]


def test_prometheus_scrapes_every_worker_on_its_web_port(
    compose: dict[str, Any], prometheus: dict[str, Any]
) -> None:
    mounts = compose["services"]["prometheus"]["volumes"]
    local, inside = mounts[0].split(":")[:2]
    assert (DOCKER / local).resolve() == (DOCKER / "prometheus.yml").resolve()
    assert f"--config.file={inside}" in compose["services"]["prometheus"]["command"]
    (job,) = prometheus["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    expected = {
        f"{s['environment']['TRACKING_VALIDATOR_WEB_HOST']}:{s['environment']['TRACKING_VALIDATOR_WEB_PORT']}"
        for s in workers(compose).values()
    }
    assert targets == expected
