"""A Compose project that a check brings up from a lab's own compose file, and takes down.

Some lessons are about Docker itself (what 127.0.0.1 means in a container, a sidecar
joining the app's network namespace), so the learner writes the compose file and a
check runs it as written, with the real Compose (`docker compose`, else Debian's
`docker-compose`), then asks Docker and Envoy what came of it. The project's name is
derived from the graded folder, so a leftover of a checker killed outright is taken
down by the next check of the same folder before it starts again.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

from meshlab.container import engine
from meshlab.errors import ToolMissing


@lru_cache(maxsize=1)
def compose_command() -> tuple[str, ...]:
    """How to call Compose here: the `docker compose` plugin, else `docker-compose`."""
    for candidate in (("docker", "compose"), ("docker-compose",)):
        if shutil.which(candidate[0]) is None:
            continue
        try:
            probe = subprocess.run([*candidate, "version"], capture_output=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return candidate
    raise ToolMissing("Docker Compose is not installed (neither `docker compose` nor `docker-compose` works)",
                      fix="install it: `sudo apt-get install docker-compose` on Debian/Ubuntu (Docker Desktop has it)")


class ComposeProject:
    """The project of FILE, named after the folder it is graded from and PART."""

    def __init__(self, file: Path, part: str):
        self.file = Path(file).resolve()
        folder = hashlib.sha1(str(self.file.parent).encode()).hexdigest()[:8]
        self.name = f"meshlab-{part}-{folder}"
        self.client = engine.connect()

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*compose_command(), "-f", str(self.file), "-p", self.name, *args],
                              cwd=self.file.parent, capture_output=True, text=True, timeout=timeout)

    def up(self) -> subprocess.CompletedProcess:
        """`up -d` after taking down what an earlier run left; the result, for its stderr."""
        self.down()
        return self._run("up", "-d", "--force-recreate")

    def down(self) -> None:
        self._run("down", "--remove-orphans", "--timeout", "2", timeout=60)

    def containers(self) -> dict[str, object]:
        """The project's containers by service name (`docker.models.containers.Container`)."""
        found = self.client.containers.list(all=True, filters={"label": f"com.docker.compose.project={self.name}"})
        return {c.labels.get("com.docker.compose.service", c.name): c for c in found}

    def published_ports(self) -> dict[int, str]:
        """Every port published on the host, with the service whose container publishes it."""
        published = {}
        for service, container in self.containers().items():
            for bindings in (container.attrs["NetworkSettings"].get("Ports") or {}).values():
                for binding in bindings or []:
                    published[int(binding["HostPort"])] = service
        return published

    def addresses(self, service: str) -> list[str]:
        """SERVICE's addresses on the project's networks."""
        container = self.containers().get(service)
        if container is None:
            return []
        networks = container.attrs["NetworkSettings"].get("Networks") or {}
        return [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]

    def log(self, service: str, lines: int = 15) -> str:
        container = self.containers().get(service)
        if container is None:
            return f"(no container for {service})"
        return container.logs(tail=lines).decode(errors="replace")

    def __enter__(self) -> "ComposeProject":
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
