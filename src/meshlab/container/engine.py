"""The Docker engine: connecting to it, and saying clearly why that is impossible.

Every Docker feature of meshlab goes through `connect()`, which turns the ways a machine
can lack Docker (no SDK, no engine, a daemon that is not running, a socket this user may
not open) into an `EnvironmentProblem` with its fix, never a traceback. The SDK
negotiates the API version, so engines from API 1.41 (Debian's docker.io 20.10) on work.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from meshlab import __version__
from meshlab.errors import EnvironmentProblem, ToolMissing

# The images meshlab makes: a Debian base (made locally where no registry answers) and
# the toolbox (Envoy, meshlab and the labs' tools) built on it, tagged with meshlab's version.
BASE_IMAGE = "meshlab-base:bookworm"
TOOLBOX_REPOSITORY = "meshlab"
TOOLBOX_IMAGE = f"{TOOLBOX_REPOSITORY}:{__version__}"
# Every container and network meshlab makes carries this label (and a few more below
# it), so they can be found again, cleaned up and told apart from the user's own.
LABEL = "io.meshlab"

_INSTALL = ("install Docker: `sudo apt-get install docker.io` on Debian/Ubuntu, Docker Desktop on macOS "
            "and Windows")


class DockerUnavailable(EnvironmentProblem):
    kind = "docker"


def socket_path() -> Path | None:
    """The engine's Unix socket as DOCKER_HOST names it (None for a TCP engine)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return Path(host[len("unix://"):]) if host.startswith("unix://") else None


def likely_present() -> bool:
    """A cheap guess, without importing the SDK: is there an engine to ask at all?"""
    path = socket_path()
    return path is None or path.exists()


def connect(timeout: float = 30.0):
    """A `docker.DockerClient` to a running engine, or a DockerUnavailable saying why not."""
    try:
        import docker
        import docker.errors
    except ImportError:
        raise ToolMissing("the Docker SDK for Python is not installed",
                          fix="pip install docker (it is one of meshlab's dependencies: reinstall meshlab)") from None
    path = socket_path()
    if path is not None and not path.exists():
        raise DockerUnavailable(f"no Docker engine: {path} does not exist", fix=_INSTALL
                                + "; then start it (`sudo dockerd &` where there is no systemd, "
                                  "`sudo systemctl start docker` where there is)")
    if path is not None and not os.access(path, os.R_OK | os.W_OK):
        raise DockerUnavailable(f"this user may not use the Docker engine's socket {path}",
                                fix="add yourself to the docker group (`sudo usermod -aG docker $USER`, then log "
                                    "in again), or run as root")
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as error:
        text = str(error)
        if "Permission denied" in text:
            raise DockerUnavailable(f"this user may not use the Docker engine ({path})",
                                    fix="add yourself to the docker group (`sudo usermod -aG docker $USER`)") from None
        raise DockerUnavailable("the Docker engine does not answer", details=f"  {text}",
                                fix="start it: `sudo systemctl start docker`, or `sudo dockerd &` where there is "
                                    "no systemd; Docker Desktop: open the app") from None
    return client


@dataclass(frozen=True)
class EngineInfo:
    version: str
    api_version: str
    os: str
    architecture: str
    images: dict[str, str | None]   # meshlab's image names -> short id, None when absent


def describe(client) -> EngineInfo:
    version = client.version()
    images = {}
    for name in (BASE_IMAGE, TOOLBOX_IMAGE):
        image = find_image(client, name)
        images[name] = image.short_id.split(":")[-1] if image is not None else None
    return EngineInfo(version=version.get("Version", "?"), api_version=version.get("ApiVersion", "?"),
                      os=version.get("Os", "?"), architecture=version.get("Arch", "?"), images=images)


def find_image(client, name: str):
    import docker.errors

    try:
        return client.images.get(name)
    except docker.errors.ImageNotFound:
        return None


def require_image(client, name: str = TOOLBOX_IMAGE):
    """The image NAME, or a DockerUnavailable that says how to make it."""
    image = find_image(client, name)
    if image is None:
        make = "meshlab image base" if name == BASE_IMAGE else "meshlab image build"
        raise DockerUnavailable(f"the Docker image {name} does not exist on this engine",
                                fix=f"build it: `{make}` (in the course checkout)")
    return image


def port_owner(client, port: int) -> str | None:
    """The container that publishes PORT on the host, if a container does."""
    for container in client.api.containers():
        if any(published.get("PublicPort") == port for published in container.get("Ports") or []):
            return container["Names"][0].lstrip("/")
    return None


def host_port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
