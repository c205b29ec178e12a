"""Chaos experiments on the Mini-Mesh: faults asked of the control plane's admin API.

An experiment is an abort (a share of requests answered with a status by the caller's
sidecar), a delay (a share of requests held before they leave), or both, on every call to
one mesh service, optionally only on a path prefix, optionally for a limited time. The
control plane turns it into Envoy's HTTP fault filter on the sidecars that call the
service and pushes it over xDS; clearing it restores the configuration from before.

    fault = parse_fault(mesh, "api", abort="10%", status=503, delay=None, ...)
    plane = ControlPlane(httpx.Client(), "http://127.0.0.1:18001")
    plane.inject(fault)                 # POST /faults   -> id
    plane.faults()                      # GET /faults
    plane.clear("api")                  # DELETE /faults?service=api -> how many

The admin API is the mesh contract's (labs/11-mini-mesh/README.md).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from meshlab.errors import EnvironmentProblem, InputError
from meshlab.mesh.manifest import Mesh

# httpx is imported where a request is sent: the control plane (meshlab.mesh.faults) reads
# experiments with this module and sends none, and importing httpx held its event loop for
# 80-110 ms at its first experiment.
if TYPE_CHECKING:
    import httpx

_PERCENT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*%?\s*$")
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


class BadExperiment(InputError):
    """The experiment asked for is not one the mesh can run (exit 2)."""


@dataclass(frozen=True)
class Fault:
    service: str
    abort_percent: float | None = None
    abort_status: int = 503
    delay_ms: int | None = None
    delay_percent: float = 100.0
    route: str | None = None
    expires_at: str | None = None           # ISO 8601, UTC
    id: str | None = None

    def body(self) -> dict:
        """The POST /faults body: every field but the id."""
        return {"service": self.service, "abort_percent": self.abort_percent, "abort_status": self.abort_status,
                "delay_ms": self.delay_ms, "delay_percent": self.delay_percent, "route": self.route,
                "expires_at": self.expires_at}

    @classmethod
    def from_json(cls, data: dict) -> Fault:
        return cls(service=data["service"], abort_percent=data.get("abort_percent"),
                   abort_status=data.get("abort_status", 503), delay_ms=data.get("delay_ms"),
                   delay_percent=data.get("delay_percent", 100.0), route=data.get("route"),
                   expires_at=data.get("expires_at"), id=data.get("id"))


def percent(text: str, *, what: str) -> float:
    """`10%`, `10` or `0.5%` as a number of percent, 0-100."""
    match = _PERCENT.match(str(text))
    if not match:
        raise BadExperiment(f"{what} {text!r} is not a percentage", fix="write it like 10% or 0.5%")
    value = float(match.group(1))
    if not 0 <= value <= 100:
        raise BadExperiment(f"{what} {text!r} is not between 0 % and 100 %", fix="a share of requests: 0% to 100%")
    return value


def milliseconds(text: str, *, what: str) -> int:
    """`2s`, `500ms`, `1.5s`, `1m` as whole milliseconds (a unit is required)."""
    match = _DURATION.match(str(text))
    if not match:
        raise BadExperiment(f"{what} {text!r} is not a duration", fix="write it with a unit: 500ms, 2s, 1m")
    value = float(match.group(1)) * _UNIT_MS[match.group(2)]
    if value < 0:
        raise BadExperiment(f"{what} {text!r} is negative", fix="a duration of 0 or more, like 2s")
    return round(value)


def parse_fault(mesh: Mesh, service: str, *, abort: str | None, status: int, delay: str | None,
                delay_percent: str | None, duration: str | None, route: str | None,
                now: dt.datetime | None = None) -> Fault:
    """The experiment the command line asks for, checked against the mesh."""
    if service not in mesh.services:
        raise BadExperiment(f"the mesh has no service {service!r}",
                            fix=f"its services: {', '.join(mesh.services)}")
    if mesh.services[service].protocol != "http":
        raise BadExperiment(f"{service} is a {mesh.services[service].protocol} service: Envoy's fault filter "
                            f"acts on HTTP requests only", fix=f"choose an http service: "
                            f"{', '.join(s for s, spec in mesh.services.items() if spec.protocol == 'http')}")
    if abort is None and delay is None:
        raise BadExperiment("an experiment needs --abort, --delay or both", fix="e.g. --abort 10% or --delay 2s")
    if not 200 <= status <= 599:
        raise BadExperiment(f"--status {status} is not an HTTP status Envoy can answer with",
                            fix="a status from 200 to 599, like 503")
    if delay is None and delay_percent is not None:
        raise BadExperiment("--delay-percent needs --delay", fix="add --delay 2s")
    if route is not None and not route.startswith("/"):
        raise BadExperiment(f"--route {route!r} is not a path prefix", fix="a prefix of request paths, like /orders")
    expires_at = None
    if duration is not None:
        seconds = milliseconds(duration, what="--for") / 1000
        if seconds <= 0:
            raise BadExperiment(f"--for {duration!r} would end before it starts", fix="a duration like 60s")
        expires_at = ((now or dt.datetime.now(dt.timezone.utc)) + dt.timedelta(seconds=seconds)).isoformat()
    return Fault(service=service,
                 abort_percent=percent(abort, what="--abort") if abort is not None else None,
                 abort_status=status,
                 delay_ms=milliseconds(delay, what="--delay") if delay is not None else None,
                 delay_percent=percent(delay_percent, what="--delay-percent") if delay_percent is not None else 100.0,
                 route=route, expires_at=expires_at)


class ControlPlane:
    """The control plane's admin API, as the mesh contract defines it."""

    def __init__(self, client: httpx.Client, url: str, *, where: str | None = None):
        self.client = client              # a plain one, or one whose requests leave from the mesh's pod
        self.url = url.rstrip("/")
        self.where = where or self.url    # how to name the control plane in a message

    def inject(self, fault: Fault) -> str:
        return self._call("POST", "/faults", json=fault.body())["id"]

    def faults(self) -> list[Fault]:
        return [Fault.from_json(item) for item in self._call("GET", "/faults")]

    def clear(self, service: str | None = None) -> int:
        return self._call("DELETE", "/faults", params={"service": service} if service else None)["cleared"]

    def _call(self, method: str, path: str, **kwargs) -> dict | list:
        import httpx

        try:
            response = self.client.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as error:
            raise EnvironmentProblem(f"no control plane answers at {self.where}",
                                     details=f"  {type(error).__name__}: {error}",
                                     fix="start the mesh (`meshlab mesh up`), or give the control plane's "
                                         "admin URL with --admin") from None
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.status_code == 400:
            message = document.get("error") if isinstance(document, dict) else response.text
            raise BadExperiment(f"the control plane refused the experiment: {message}")
        if response.status_code >= 300 or document is None:
            raise EnvironmentProblem(f"the control plane answered {method} {path} with {response.status_code}",
                                     details=f"  {response.text[:500]}",
                                     fix="does it serve the admin API of the mesh contract (/faults)? "
                                         "See labs/11-mini-mesh/README.md")
        return document


def expires_in(fault: Fault, now: dt.datetime | None = None) -> float | None:
    """Seconds until FAULT expires (None: it lasts until cleared)."""
    if fault.expires_at is None:
        return None
    end = dt.datetime.fromisoformat(fault.expires_at.replace("Z", "+00:00"))
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.timezone.utc)
    return (end - (now or dt.datetime.now(dt.timezone.utc))).total_seconds()
