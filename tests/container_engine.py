"""The container engine the container tests use: Docker where it answers (DOCKER_HOST or its
default socket), else podman's rootful Docker-compatible socket (what `.ci/containers` starts
on a machine without Docker). The tests drive it three ways: the docker SDK (testcontainers),
the engine's CLI (`docker` or `podman`) to build and inspect, and compose (`docker compose` or
`podman-compose`) for docker/compose.yaml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PODMAN_SOCKET = "/run/podman/podman.sock"
WORKER_IMAGE = "tracking-validator:latest"


@dataclass(frozen=True)
class Engine:
    docker_host: str | None  # None: the docker SDK's default socket
    cli: str  # "docker" or "podman"

    @property
    def podman(self) -> bool:
        return self.cli == "podman"

    def compose(self) -> list[str]:
        """The compose command for docker/compose.yaml."""
        if self.podman:
            found = shutil.which("podman-compose")
            if not found:
                raise EngineError("podman-compose is missing (apt-get install podman-compose)")
            return [found]
        return [self.cli, "compose"]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.docker_host and not self.podman:
            env["DOCKER_HOST"] = self.docker_host
        return env

    def run(self, *args: str, timeout: float = 120, check: bool = True,
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """`<cli> ARGS`; a failure raises with the command's output."""
        proc = subprocess.run([self.cli, *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env(),
                              stdin=subprocess.DEVNULL)  # fmt: skip
        if check and proc.returncode != 0:
            raise EngineError(f"{self.cli} {' '.join(args)}: exit {proc.returncode}\n"
                              f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")  # fmt: skip
        return proc

    def build_worker_image(self, tag: str = WORKER_IMAGE) -> float:
        """Build docker/Dockerfile from the repository root as its header says; returns
        the seconds it took. podman builds OCI images unless told `--format docker`, which
        would drop the HEALTHCHECK."""
        args = ["build", "-f", "docker/Dockerfile", "-t", tag]
        if self.podman:
            args += ["--format", "docker", "--ignorefile", "docker/Dockerfile.dockerignore"]
        start = time.monotonic()
        proc = subprocess.run([self.cli, *args, "."], cwd=REPO, capture_output=True, text=True,
                              timeout=900, env=self.env(), stdin=subprocess.DEVNULL)  # fmt: skip
        if proc.returncode != 0:
            raise EngineError(f"building {tag} failed (exit {proc.returncode}):\n"
                              f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")  # fmt: skip
        return time.monotonic() - start

    def healthy(self, container: str) -> bool:
        """Whether the image's HEALTHCHECK passes now. Docker runs it on its interval;
        podman schedules it with systemd timers, absent here, so it is run on demand."""
        if self.podman:
            return self.run("healthcheck", "run", container, check=False).returncode == 0
        status = self.run("inspect", "--format", "{{.State.Health.Status}}", container)
        return status.stdout.strip() == "healthy"


class EngineError(RuntimeError):
    """The container engine is missing or a command of it failed; the message says why."""


def _ping(docker_host: str | None, timeout: float = 3.0) -> bool:
    try:
        import docker

        if docker_host:
            client = docker.DockerClient(base_url=docker_host, timeout=timeout)
        else:
            client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def find_engine() -> Engine:
    """The engine that answers, and the environment the docker SDK / testcontainers need
    for it (DOCKER_HOST; Ryuk off on podman: its image cannot be pulled without a
    registry, and each test removes its own containers). Raises EngineError when none does."""
    if os.environ.get("TRACKING_VALIDATOR_NO_DOCKER"):
        raise EngineError("TRACKING_VALIDATOR_NO_DOCKER is set")
    host = os.environ.get("DOCKER_HOST") or None
    podman_host = f"unix://{PODMAN_SOCKET}"
    if host != podman_host and _ping(host):
        if shutil.which("docker"):
            return Engine(host, "docker")
        raise EngineError(f"a Docker engine answers ({host or 'default socket'}) "
                          "but the docker CLI is missing")  # fmt: skip
    if shutil.which("podman") and _ping(podman_host):
        os.environ["DOCKER_HOST"] = podman_host
        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        return Engine(podman_host, "podman")
    raise EngineError(
        f"no container engine answers (DOCKER_HOST={host or 'unset'}, nor podman on "
        f"{PODMAN_SOCKET}); start Docker, or run `bash .ci/containers` as root on Debian"
    )
