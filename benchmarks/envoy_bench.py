"""What the benchmarks share: the one shape of Envoy they run (a listener on 127.0.0.1
whose HTTP connection manager ends in the router), built as data rather than as YAML
text, and the sequential latency loop with its percentiles.

    config = envoy_bench.proxy(port, [envoy_bench.to_cluster("app")],
                               filters=[envoy_bench.lua_filter(path)], clusters=[envoy_bench.cluster("app", 8080)])
    samples = envoy_bench.interleaved({"plain": url_a, "lua": url_b}, requests=2000)
    p50_ms, p99_ms = envoy_bench.percentiles(samples["lua"])

A benchmark imports it as a sibling module (`python benchmarks/x.py` puts benchmarks/
first on the path).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Callable

import httpx
import yaml

from meshlab.envoy import EnvoyProcess

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}


def address(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def to_cluster(name: str) -> dict:
    """A route sending every path to the cluster NAME."""
    return {"match": {"prefix": "/"}, "route": {"cluster": name}}


def direct(body: dict) -> dict:
    """A route answering every path itself with BODY (`{"inline_string": ...}` or
    `{"filename": ...}`): Envoy's own work, no upstream."""
    return {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": body}}


def cluster(name: str, port: int, *, http2: bool = False) -> dict:
    """A cluster of one endpoint, 127.0.0.1:PORT (HTTP2: for a gRPC service)."""
    spec = {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": address(port)}}]}]}}
    if http2:
        spec["typed_extension_protocol_options"] = {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    return spec


def lua_filter(path: Path) -> dict:
    return {"name": "envoy.filters.http.lua", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"filename": str(path)}}}


def wasm_filter(path: Path) -> dict:
    return {"name": "envoy.filters.http.wasm", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": str(path)}}}}}}


def proxy(port: int, routes: list[dict], *, filters: list[dict] = (), clusters: list[dict] = (), admin: int = 0,
          hcm: dict | None = None, listener: dict | None = None, route_config: dict | None = None,
          **bootstrap: object) -> str:
    """An Envoy bootstrap as YAML: admin on 127.0.0.1:ADMIN (0: any free port), one
    listener on 127.0.0.1:PORT with ROUTES, FILTERS before the router, CLUSTERS. HCM,
    LISTENER and ROUTE_CONFIG add fields to those; BOOTSTRAP to the top level."""
    manager = {"@type": HCM, "stat_prefix": "bench",
               "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}],
                                **(route_config or {})},
               "http_filters": [*filters, ROUTER], **(hcm or {})}
    chain = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}]}
    config = {"admin": {"address": address(admin)}, **bootstrap,
              "static_resources": {"listeners": [{"address": address(port), "filter_chains": [chain],
                                                  **(listener or {})}],
                                   "clusters": list(clusters)}}
    return yaml.safe_dump(config, sort_keys=False)


def start(work: Path, name: str, config: str) -> EnvoyProcess:
    """An Envoy of CONFIG, its file and logs in WORK, started and ready."""
    path = work / f"{name}.yaml"
    path.write_text(config)
    return EnvoyProcess(path, workdir=work, name=name).start()


def wait_up(url: str, timeout: float = 20.0) -> None:
    """Until URL answers HTTP at all (any status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1, trust_env=False)
            return
        except httpx.HTTPError:
            time.sleep(0.02)
    raise SystemExit(f"{url} did not come up within {timeout:.0f} s")


def interleaved(urls: dict[str, str], requests: int, headers: Callable[[int], dict[str, str]] = lambda i: {},
                *, warm: int = 0) -> dict[str, list[float]]:
    """Seconds per request, by name: REQUESTS sequential keep-alive GETs to each of URLS,
    the order rotating every round so that load on the machine hits every one alike,
    after WARM untimed rounds (connections made, caches filled). HEADERS(i) are round
    i's headers. A non-200 answer ends the benchmark."""
    clients = {name: httpx.Client(trust_env=False) for name in urls}
    samples: dict[str, list[float]] = {name: [] for name in urls}
    names = list(urls)
    try:
        for i in range(-warm, requests):
            for name in names[i % len(names):] + names[:i % len(names)]:
                started = time.perf_counter()
                response = clients[name].get(urls[name], headers=headers(i))
                if i >= 0:
                    samples[name].append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise SystemExit(f"{name}: HTTP {response.status_code} {response.text[:200]!r}")
    finally:
        for client in clients.values():
            client.close()
    return samples


def percentiles(values: list[float]) -> tuple[float, float]:
    """(p50, p99) of VALUES in seconds, as milliseconds."""
    ordered = sorted(values)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99)] * 1000
