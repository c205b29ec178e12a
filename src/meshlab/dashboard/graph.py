"""The mesh as a graph, from Prometheus: services as nodes, calls as edges.

A call from service S to service D is seen by the sidecars of S: their outbound
listener has a filter chain for D (matched on D's virtual address), whose HTTP
connection manager (or TCP proxy) counts what S sent D, under its stat prefix. Reading
each sidecar's listeners maps its prefixes to destinations, whatever the control plane
named them; the connection manager's counters include what the sidecar answered itself
(an injected fault, a 503 with no healthy host), which the cluster's counters would miss.

    edges:   requests/s, error % (5xx), p99 (ms) for HTTP; bytes/s sent for TCP
    health:  "ok" (no error), "degraded" (under 5 % errors), "failing" (5 % or more), "idle"

Only calls with traffic in the last 15 s are edges: every sidecar can call every
service, and a graph of every possible call would hide the ones that happen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from meshlab.dashboard.prometheus import Prometheus
from meshlab.mesh import inject
from meshlab.mesh.manifest import Mesh

WINDOW = "15s"          # rates over the last 15 s of 1 s scrapes
LATENCY_WINDOW = "30s"  # enough observations for a p99 (a sidecar flushes its histograms at each scrape)
FAILING = 0.05

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


@dataclass(frozen=True)
class Route:
    """What one stat prefix of one caller service counts: calls to DESTINATION."""

    service: str
    prefix: str
    destination: str
    protocol: str        # "http" or "tcp"


def routes_of(mesh: Mesh, listeners_of: Callable[[str], list[dict]]) -> list[Route]:
    """Every (caller, stat prefix) -> destination, from each workload's outbound filter
    chains. LISTENERS_OF(workload) gives its config dump's dynamic listeners."""
    by_address = {address: name for name, address in inject.addresses(mesh).services.items()}
    found: dict[tuple[str, str], Route] = {}
    for workload in mesh.workloads:
        try:
            listeners = listeners_of(workload.name)
        except Exception:  # noqa: BLE001 - a sidecar not running yet has no routes to show
            continue
        for listener in listeners:
            active = listener.get("active_state", {}).get("listener", {})
            for chain in active.get("filter_chains", []):
                ranges = chain.get("filter_chain_match", {}).get("prefix_ranges", [])
                destinations = {by_address.get(r.get("address_prefix")) for r in ranges} - {None}
                if len(destinations) != 1:
                    continue
                destination = destinations.pop()
                for network_filter in chain.get("filters", []):
                    config = network_filter.get("typed_config", {})
                    kind = {HCM: "http", TCP: "tcp"}.get(config.get("@type"))
                    if kind and config.get("stat_prefix"):
                        key = (workload.service, config["stat_prefix"])
                        found[key] = Route(workload.service, config["stat_prefix"], destination, kind)
    return list(found.values())


def graph(mesh: Mesh, prometheus: Prometheus, routes: list[Route]) -> dict:
    """{"nodes": [...], "edges": [...]} for the page, with each edge's numbers and health."""
    http = {(r.service, r.prefix): r for r in routes if r.protocol == "http"}
    tcp = {(r.service, r.prefix): r for r in routes if r.protocol == "tcp"}
    by = "service, envoy_http_conn_manager_prefix"
    rates = _values(prometheus.query(f"sum by ({by}) (rate(envoy_http_downstream_rq_total[{WINDOW}]))"))
    errors = _values(prometheus.query(
        f'sum by ({by}) (rate(envoy_http_downstream_rq_xx{{envoy_response_code_class="5"}}[{WINDOW}]))'))
    p99 = _values(prometheus.query(
        f"histogram_quantile(0.99, sum by ({by}, le) (rate(envoy_http_downstream_rq_time_bucket[{LATENCY_WINDOW}])))"))
    tcp_by = "service, envoy_tcp_prefix"
    sent = _values(prometheus.query(f"sum by ({tcp_by}) (rate(envoy_tcp_downstream_cx_rx_bytes_total[{WINDOW}]))"),
                   "envoy_tcp_prefix")
    edges: dict[tuple[str, str], dict] = {}
    for key, route in http.items():
        edge = edges.setdefault((route.service, route.destination), _edge(route))
        edge["rps"] += rates.get(key, 0.0)
        edge["errors_per_s"] += errors.get(key, 0.0)
        latency = p99.get(key)
        if latency is not None and not math.isnan(latency):
            edge["p99_ms"] = max(edge["p99_ms"] or 0.0, latency)
    for key, route in tcp.items():
        edge = edges.setdefault((route.service, route.destination), _edge(route))
        edge["bytes_per_s"] += sent.get(key, 0.0)
    for edge in edges.values():
        edge["error_ratio"] = edge["errors_per_s"] / edge["rps"] if edge["rps"] > 0 else 0.0
        edge["health"] = health(edge)
        edge["label"] = label(edge)
    live = [edge for edge in edges.values() if edge["health"] != "idle"]
    nodes = [{"id": name, "protocol": service.protocol, "versions": list(service.versions)}
             for name, service in mesh.services.items()]
    return {"nodes": nodes, "edges": sorted(live, key=lambda e: (e["source"], e["target"]))}


def series(mesh: Mesh, prometheus: Prometheus, routes: list[Route], seconds: int = 300, step: float = 2.0) -> dict:
    """Per destination service, over the last SECONDS: the golden signals of the calls
    it receives through the mesh (requests/s, error %, p99 ms), as its callers see them."""
    selector = {}
    for route in routes:
        if route.protocol == "http":
            selector.setdefault(route.destination, set()).add(route.prefix)
    result = {}
    for service, prefixes in selector.items():
        match = f'envoy_http_conn_manager_prefix=~"{"|".join(sorted(prefixes))}"'
        callers = "|".join(sorted({r.service for r in routes if r.destination == service}))
        where = f'{match}, service=~"{callers}"'
        traffic = f"sum(rate(envoy_http_downstream_rq_total{{{where}}}[{WINDOW}]))"
        failed = f'sum(rate(envoy_http_downstream_rq_xx{{{where}, envoy_response_code_class="5"}}[{WINDOW}]))'
        signals = {
            "rps": _points(prometheus.query_range(traffic, seconds, step)),
            "error_pct": _points(prometheus.query_range(f"100 * ({failed}) / ({traffic})", seconds, step)),
            "p99_ms": _points(prometheus.query_range(
                f"histogram_quantile(0.99, sum by (le) (rate(envoy_http_downstream_rq_time_bucket{{{where}}}"
                f"[{LATENCY_WINDOW}])))", seconds, step)),
        }
        if any(value > 0 for _, value in signals["rps"]):     # a service nobody called: no lines
            result[service] = signals
    return result


def health(edge: dict) -> str:
    if edge["protocol"] == "tcp":
        return "ok" if edge["bytes_per_s"] > 0 else "idle"
    if edge["rps"] <= 0:
        return "idle"
    if edge["error_ratio"] <= 0:
        return "ok"
    return "failing" if edge["error_ratio"] >= FAILING else "degraded"


def label(edge: dict) -> str:
    if edge["protocol"] == "tcp":
        return f"tcp · {edge['bytes_per_s']:.0f} B/s sent"
    p99 = f"{edge['p99_ms']:.0f} ms" if edge["p99_ms"] is not None else "- ms"
    return f"{edge['rps']:.1f} rps · {100 * edge['error_ratio']:.1f} % err · p99 {p99}"


def _edge(route: Route) -> dict:
    return {"id": f"{route.service}->{route.destination}", "source": route.service, "target": route.destination,
            "protocol": route.protocol, "rps": 0.0, "errors_per_s": 0.0, "p99_ms": None, "bytes_per_s": 0.0}


def _values(result: list[dict], prefix_label: str = "envoy_http_conn_manager_prefix") -> dict[tuple[str, str], float]:
    return {(r["metric"].get("service", ""), r["metric"].get(prefix_label, "")): float(r["value"][1])
            for r in result}


def _points(result: list[dict]) -> list[list[float]]:
    if not result:
        return []
    return [[float(t), float(v)] for t, v in result[0]["values"] if not math.isnan(float(v))]
