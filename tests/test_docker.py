"""docker/ read as text, for what building and running it does not show
(tests/test_containers.py builds the image and runs compose.yaml): every variable the image
and compose set is one the code reads (a misspelt one is ignored silently), the final stage
installs nothing, the worker state sits on a volume, and compose's workers share one group
but not their state."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml  # pyyaml, a dev dependency: missing, the test fails instead of skipping

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


def test_final_stage_copies_the_venv_and_installs_nothing() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    # no build tools in the final stage: it copies the venv from the build stage
    assert any(ins == "COPY" and rest.startswith("--from=") for ins, rest in final)
    assert not any(ins == "RUN" and "pip install" in rest for ins, rest in final)


def test_image_sets_only_variables_the_code_reads() -> None:
    read = variables_the_code_reads()
    for stage in dockerfile_stages():
        for name in env_of(stage):
            assert name in read or name in PYTHON_RUNTIME, f"the code does not read {name}"


def test_image_keeps_worker_state_on_its_volume_and_exposes_the_web_port() -> None:
    final = dockerfile_stages()[-1]
    env = env_of(final)
    config = StreamConfig.from_env(env)  # every setting it gives parses
    assert one(final, "EXPOSE") == str(config.web_port)
    volume = json.loads(one(final, "VOLUME"))
    assert any(env["TRACKING_VALIDATOR_STATE_DIR"].startswith(v) for v in volume)


# ---------------------------------------------------------------- compose


def test_compose_workers_are_one_group_each_with_its_own_state(
    compose: dict[str, Any],
) -> None:
    found = workers(compose)
    assert len(found) == 2
    app_ids = {s["environment"]["TRACKING_VALIDATOR_APP_ID"] for s in found.values()}
    assert len(app_ids) == 1  # one consumer group
    volumes = [s["volumes"][0].split(":")[0] for s in found.values()]
    assert len(set(volumes)) == 2  # each worker its own state
    for service in found.values():
        state = service["environment"]["TRACKING_VALIDATOR_STATE_DIR"]
        assert state.startswith(service["volumes"][0].split(":")[1])


def test_compose_sets_only_variables_the_code_reads(compose: dict[str, Any]) -> None:
    read = variables_the_code_reads()
    for name, service in workers(compose).items():
        for variable in service["environment"]:
            assert variable in read, f"{name}: the code does not read {variable}"
        # and what they say parses
        StreamConfig.from_env({k: str(v) for k, v in service["environment"].items()})
