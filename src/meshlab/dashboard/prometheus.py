"""A Prometheus of the dashboard's own (Debian's `prometheus`, as lab 08 runs it): a
child process on 127.0.0.1 with its time series in a temporary folder, both gone when
the dashboard stops; and its HTTP API.

Each sidecar's admin interface listens on its pod's loopback, out of Prometheus's reach,
so every target is the dashboard's relay (`/scrape/<workload>`), which fetches that
sidecar's `/stats/prometheus` from inside its pod; each target carries the labels
`workload`, `service` and `version`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from meshlab.errors import EnvironmentProblem, ToolMissing
from meshlab.mesh.manifest import Mesh
from meshlab.ports import free_port

SCRAPE_INTERVAL = "1s"


def config(mesh: Mesh, relay: str) -> dict:
    """Scrape every workload of MESH through RELAY (`http://127.0.0.1:PORT`), each second."""
    host = relay.split("://", 1)[1]
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [{
            "job_name": f"sidecar-{w.name}",
            "metrics_path": f"/scrape/{w.name}",
            "static_configs": [{"targets": [host],
                                "labels": {"workload": w.name, "service": w.service, "version": w.version}}],
        } for w in mesh.workloads],
    }


class Prometheus:
    """`with Prometheus(mesh, relay) as prom: prom.query("up")`."""

    def __init__(self, mesh: Mesh, relay: str):
        self.mesh = mesh
        self.relay = relay
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._folder: Path | None = None
        self._process: subprocess.Popen | None = None
        self._http = httpx.Client(timeout=10.0, trust_env=False)

    def __enter__(self) -> Prometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise ToolMissing("the dashboard needs Prometheus", fix="sudo apt-get install prometheus")
        self._folder = Path(tempfile.mkdtemp(prefix="meshlab-dashboard-"))
        (self._folder / "prometheus.yml").write_text(yaml.safe_dump(config(self.mesh, self.relay)))
        log = open(self._folder / "prometheus.log", "wb")
        self._process = subprocess.Popen(
            [binary, f"--config.file={self._folder / 'prometheus.yml'}", f"--storage.tsdb.path={self._folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = (self._folder / "prometheus.log").read_text(errors="replace")[-1500:]
                self.__exit__()
                raise EnvironmentProblem("Prometheus exited at start", details=tail)
            try:
                if self._http.get(self.url + "/-/ready").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise EnvironmentProblem("Prometheus did not become ready in 30 s")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._http.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def query(self, promql: str) -> list[dict]:
        """An instant query's vector: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        return self._api("/api/v1/query", {"query": promql})

    def query_range(self, promql: str, seconds: int, step: float) -> list[dict]:
        end = time.time()
        return self._api("/api/v1/query_range", {"query": promql, "start": end - seconds, "end": end, "step": step})

    def targets_up(self) -> dict[str, bool]:
        """Each workload's scrape: up or not."""
        return {r["metric"].get("workload", "?"): r["value"][1] == "1" for r in self.query("up")}

    def _api(self, path: str, params: dict) -> list[dict]:
        response = self._http.get(self.url + path, params=params)
        document = response.json()
        if document.get("status") != "success":
            raise EnvironmentProblem(f"Prometheus refused a query: {document.get('error')}",
                                     details=f"  {params.get('query')}")
        return document["data"]["result"]
