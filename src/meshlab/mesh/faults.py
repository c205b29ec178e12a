"""The control plane's book of fault experiments (what `meshlab chaos` asks for).

The admin API of the mesh contract, on the control plane's side: GET/POST/DELETE
/faults. The book checks each experiment against the mesh (an HTTP service of the
manifest, shares of 0-100 %, a delay of 0 or more), gives it an id, and drops it when
its `expires_at` passes. What an experiment does to the sidecars is the translation's
business (lab 11's control_plane.py gets the running experiments as `node.faults`); the
book only says when they changed, so that the control plane pushes again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import time
from dataclasses import asdict, replace
from typing import Callable

from meshlab.chaos import Fault
from meshlab.mesh.manifest import Mesh

FIELDS = ("service", "abort_percent", "abort_status", "delay_ms", "delay_percent", "route", "expires_at")


class Experiments:
    def __init__(self) -> None:
        self._running: dict[str, Fault] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()

    def active(self) -> tuple[Fault, ...]:
        """The experiments running now, oldest first (expired ones are dropped here too)."""
        self._expire()
        return tuple(self._running.values())

    def respond(self, method: str, query: dict, body: bytes, mesh: Mesh | None) -> tuple[int, object]:
        """Answer an admin request for /faults: (HTTP status, JSON document)."""
        if method == "GET":
            return 200, [asdict(f) for f in self.active()]
        if method == "POST":
            try:
                data = json.loads(body or b"null")
            except ValueError:
                return 400, {"error": "the body must be a JSON object with the fields " + ", ".join(FIELDS)}
            fault, problem = parse(data, mesh)
            if problem:
                return 400, {"error": problem}
            # One experiment per service at a time, as a route holds one fault setting.
            running = next((f for f in self.active() if f.service == fault.service), None)
            if running is not None:
                return 400, {"error": f"{fault.service} already has an experiment ({running.id}): "
                                      f"clear it first (meshlab chaos clear {fault.service})"}
            fault = replace(fault, id=f"fault-{next(self._ids)}")
            self._running[fault.id] = fault
            self._changed.set()
            return 200, {"id": fault.id}
        if method == "DELETE":
            service = (query.get("service") or [None])[0]
            gone = [key for key, f in self._running.items() if service is None or f.service == service]
            for key in gone:
                del self._running[key]
            return 200, {"cleared": len(gone)}
        return 405, {"error": f"{method} /faults: use GET, POST or DELETE"}

    async def expire_forever(self, on_change: Callable[[], None]) -> None:
        """Call ON_CHANGE whenever an experiment ends by itself."""
        while True:
            waits = [left for f in self._running.values() if (left := _seconds_left(f)) is not None]
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=max(0.01, min(waits)) if waits else None)
                continue                  # a new experiment: compute the next end again
            except asyncio.TimeoutError:
                pass
            if self._expire():
                on_change()

    def _expire(self) -> bool:
        ended = [key for key, f in self._running.items() if (left := _seconds_left(f)) is not None and left <= 0]
        for key in ended:
            del self._running[key]
        return bool(ended)


def parse(data: object, mesh: Mesh | None) -> tuple[Fault | None, str | None]:
    """An experiment from a POST body, or why it is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("service"), str):
        return None, "the body must be a JSON object with at least `service`"
    unknown = set(data) - set(FIELDS)
    if unknown:
        return None, f"unknown fields {sorted(unknown)}; the fields are {', '.join(FIELDS)}"
    service = data["service"]
    if mesh is not None:
        if service not in mesh.services:
            return None, f"the mesh has no service {service!r}"
        if mesh.services[service].protocol != "http":
            return None, f"{service} is a {mesh.services[service].protocol} service: faults apply to HTTP only"
    fault = Fault(service=service, abort_percent=data.get("abort_percent"),
                  abort_status=data.get("abort_status", 503) if data.get("abort_status") is not None else 503,
                  delay_ms=data.get("delay_ms"), delay_percent=data.get("delay_percent", 100.0)
                  if data.get("delay_percent") is not None else 100.0,
                  route=data.get("route"), expires_at=data.get("expires_at"))
    if fault.abort_percent is None and fault.delay_ms is None:
        return None, "an experiment needs abort_percent, delay_ms or both"
    for name in ("abort_percent", "delay_percent"):
        value = getattr(fault, name)
        if value is not None and (not _number(value) or not 0 <= value <= 100):
            return None, f"{name} must be a number from 0 to 100"
    if fault.delay_ms is not None and (not isinstance(fault.delay_ms, int) or isinstance(fault.delay_ms, bool)
                                       or fault.delay_ms < 0):
        return None, "delay_ms must be a whole number of milliseconds, 0 or more"
    if not isinstance(fault.abort_status, int) or not 200 <= fault.abort_status <= 599:
        return None, "abort_status must be an HTTP status from 200 to 599"
    if fault.route is not None and (not isinstance(fault.route, str) or not fault.route.startswith("/")):
        return None, "route must be a path prefix starting with /"
    if fault.expires_at is not None:
        try:
            _seconds_left(fault)
        except (TypeError, ValueError):
            return None, "expires_at must be an ISO 8601 time, like 2026-01-01T12:00:00+00:00"
    return fault, None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _seconds_left(fault: Fault) -> float | None:
    if fault.expires_at is None:
        return None
    end = dt.datetime.fromisoformat(fault.expires_at.replace("Z", "+00:00"))
    if end.tzinfo is None:
        end = end.replace(tzinfo=dt.timezone.utc)
    return end.timestamp() - time.time()
