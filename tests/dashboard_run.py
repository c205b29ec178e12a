"""Run lab 11's solved mesh, `meshlab mesh dashboard`'s server and a headless Chromium
(Debian's, driven by Playwright) in this process's network namespace, with known
traffic, and write what the page showed as JSON (and a screenshot) into OUT.

    python tests/dashboard_run.py LAB_DIR OUT_DIR        (inside `unshare --net`)

Phases: 20 requests/s from inside web's pod, paced; then the same with 50 % of calls
to api aborted (a fault experiment through the control plane's admin API). In each,
the page's graph is read once it shows the phase: its edges, their numbers and the
colours cytoscape drew them in.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import httpx

from meshlab.course import load_course
from meshlab.dashboard.server import Dashboard, Sources
from meshlab.mesh import inject, manifest
from meshlab.runtime.netns import NetnsTransport
from meshlab.session import LabSession

RATE = 20.0
CHROMIUM = "/usr/bin/chromium"


class PacedLoad:
    """RATE requests per second to web's app from inside its pod, on one connection."""

    def __init__(self, netns: str):
        self.netns = netns
        self.sent = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(transport=NetnsTransport(self.netns), timeout=10.0, trust_env=False) as http:
            start = time.monotonic()
            while not self.stop.is_set():
                try:
                    http.get("http://127.0.0.1:8080/dashboard")
                except httpx.HTTPError:
                    pass
                self.sent += 1
                time.sleep(max(0.0, start + self.sent / RATE - time.monotonic()))

    def __enter__(self) -> PacedLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


def page_edges(page) -> list[dict]:
    return page.evaluate("""() => window.meshDashboard.cy.edges().map((e) => ({
        id: e.id(), health: e.data('health'), rps: e.data('rps'), error_ratio: e.data('error_ratio'),
        p99_ms: e.data('p99_ms'), label: e.data('label'), protocol: e.data('protocol'),
        drawn: e.renderedStyle('line-color') }))""")


def wait_for(page, predicate, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    edges: list[dict] = []
    while time.monotonic() < deadline:
        edges = page_edges(page)
        if predicate({e["id"]: e for e in edges}):
            return edges
        time.sleep(0.5)
    return edges


def main(lab_dir: Path, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    course = load_course()
    lab = course.find("11")
    session = LabSession.open(lab, lab_dir, out / "run")
    result: dict = {}
    try:
        mesh = manifest.load(lab_dir / "mesh.yaml")
        control = session.pod(inject.CONTROL_POD)
        admin_url = f"http://127.0.0.1:{mesh.admin_port}"
        sources = Sources(mesh, lambda w, path: session.envoy(f"{w}-envoy").get(path).content,
                          lambda: control.get(admin_url + "/status").json())
        with Dashboard(sources) as dashboard, PacedLoad(session.runtime.pods.netns_path("web-v1")), \
                sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                # No network but this machine's loopback: the page must need no CDN.
                args=["--no-sandbox", '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            failed_requests: list[str] = []
            page.on("requestfailed", lambda request: failed_requests.append(request.url))
            page.goto(dashboard.url + "/")
            page.wait_for_selector("body[data-ready=true]", timeout=60_000)
            # Once Prometheus's 15 s window lies inside the load: about RATE.
            result["steady"] = wait_for(page, lambda e: abs(e.get("web->api", {}).get("rps", 0) - RATE) < RATE * 0.1
                                        and e["web->api"]["health"] == "ok" and "api->db" in e, timeout=60)
            control.post(admin_url + "/faults", json={"service": "api", "abort_percent": 50.0})
            result["aborting"] = wait_for(page, lambda e: e.get("web->api", {}).get("health") == "failing"
                                          and 0.3 < e["web->api"]["error_ratio"] < 0.7, timeout=60)
            page.wait_for_function("() => window.meshDashboard.charts.rps.data.datasets.length > 0", timeout=30_000)
            time.sleep(2.5)   # one more refresh, for the charts
            page.screenshot(path=str(out / "dashboard.png"), full_page=True)
            result["table"] = page.eval_on_selector_all(
                "#edges tbody tr", "rows => rows.map(r => ({edge: r.dataset.edge, health: r.dataset.health, "
                                   "cells: [...r.cells].map(c => c.textContent)}))")
            result["status_rows"] = page.eval_on_selector_all("#status tbody tr", "rows => rows.length")
            result["chart_services"] = page.evaluate(
                "() => window.meshDashboard.charts.rps.data.datasets.map(d => d.label)")
            result["failed_requests"] = failed_requests
            result["envoy_web_api"] = session.envoy("web-v1-envoy").stats(r"\.outbound_api\.fault\.aborts_injected$")
            browser.close()
    finally:
        session.close()
        (out / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve())
