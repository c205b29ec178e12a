"""Lab 06 — your xDS control plane. Steps 1-5 are yours, each marked where it goes; the
README walks through them, and `meshlab check 6` tells you what is still missing.

It reads the intent (intent.yaml: a listener port, routes, services with weighted
endpoints), translates it into Envoy's four resource types, and serves them to Envoy
over ADS with meshlab's xDS toolkit. When intent.yaml changes, it builds a new
snapshot and Envoy applies it, without a restart.

    python control_plane.py --intent intent.yaml --xds-port 18000 --admin-port 18001

Your part is the translation (steps 1-4) and the snapshot's version (step 5). The
rest is given: reading the intent, serving, watching the file. The admin view at
http://127.0.0.1:18001/status (or `meshlab xds status`) shows what Envoy acknowledged
and what it rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
from dataclasses import dataclass

import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

from meshlab.xds import Snapshot, SnapshotCache, XdsServer, watch_file

# Envoy introduces itself with the node id of its bootstrap (envoy.yaml: node.id);
# the cache keeps one snapshot per node id.
NODE_ID = "lab06-envoy"
LISTENER_NAME = "ingress"
ROUTE_CONFIG_NAME = "routes"   # the listener asks for this route configuration over RDS

log = logging.getLogger("control-plane")


# -- the intent (given) ---------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    weight: int = 1


@dataclass(frozen=True)
class Service:
    name: str
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class Route:
    prefix: str
    service: str


@dataclass(frozen=True)
class Intent:
    listener_port: int
    routes: tuple[Route, ...]
    services: tuple[Service, ...]


class IntentError(ValueError):
    """The intent file does not have the expected shape."""


def parse_intent(text: str) -> Intent:
    """The intent as data. Checks its shape only, not whether Envoy will like the values:
    that is Envoy's call (and the lab's point: see what a NACK looks like)."""
    try:
        data = yaml.safe_load(text) or {}
        services = tuple(
            Service(name, tuple(Endpoint(str(e["address"]), int(e["port"]), int(e.get("weight", 1)))
                                for e in (body or {}).get("endpoints") or []))
            for name, body in (data.get("services") or {}).items())
        routes = tuple(Route(str(r["prefix"]), str(r["service"])) for r in data.get("routes") or [])
        intent = Intent(int(data["listener"]["port"]), routes, services)
    except (yaml.YAMLError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise IntentError(f"cannot read the intent: {type(error).__name__}: {error}") from None
    names = {s.name for s in intent.services}
    for route in intent.routes:
        if route.service not in names:
            raise IntentError(f"route {route.prefix} sends to service {route.service!r}, which is not defined")
    return intent


# -- from intent to xDS resources (your part) -----------------------------------------

def ads() -> config_source_pb2.ConfigSource:
    """'Fetch it over the same ADS stream': how a listener finds its routes and a
    cluster its endpoints."""
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def pack(message: Message) -> any_pb2.Any:
    """A message inside an `Any` (for typed_config fields)."""
    holder = any_pb2.Any()
    holder.Pack(message)
    return holder


def build_listener(intent: Intent) -> listener_pb2.Listener | None:
    """Step 1 (LDS): a listener on 127.0.0.1:<listener port> whose HTTP connection
    manager fetches route configuration ROUTE_CONFIG_NAME over RDS (ADS) and ends with
    the router filter."""
    # TODO(step 1): return a listener_pb2.Listener named LISTENER_NAME, with
    #   - address: a socket address 127.0.0.1 : intent.listener_port;
    #   - one filter chain with one filter, "envoy.filters.network.http_connection_manager",
    #     whose typed_config is pack(hcm.HttpConnectionManager(...)) with a stat_prefix,
    #     rds=hcm.Rds(route_config_name=ROUTE_CONFIG_NAME, config_source=ads()), and
    #     http_filters ending with the router: hcm.HttpFilter(name="envoy.filters.http.router",
    #     typed_config=pack(router_pb2.Router())).
    return None


def build_route_configuration(intent: Intent) -> route_pb2.RouteConfiguration | None:
    """Step 2 (RDS): route configuration ROUTE_CONFIG_NAME, one virtual host for every
    domain, one route per intent route, in the intent's order, each sending its prefix
    to the cluster of its service."""
    # TODO(step 2): return a route_pb2.RouteConfiguration named ROUTE_CONFIG_NAME with one
    #   route_components_pb2.VirtualHost (domains ["*"]) whose routes are, for each
    #   route in intent.routes: match on RouteMatch(prefix=...), action
    #   RouteAction(cluster=<the service's cluster name>).
    return None


def build_cluster(service: Service) -> cluster_pb2.Cluster | None:
    """Step 3 (CDS): a cluster named after the service, of type EDS: its endpoints come
    over ADS too."""
    # TODO(step 3): return a cluster_pb2.Cluster named service.name, of type
    #   cluster_pb2.Cluster.EDS, with eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
    #   eds_config=ads()) and a connect_timeout (duration_pb2.Duration(seconds=1)).
    return None


def build_load_assignment(service: Service) -> endpoint_pb2.ClusterLoadAssignment | None:
    """Step 4 (EDS): the service's endpoints, each with its load-balancing weight, for
    the cluster of the same name."""
    # TODO(step 4): return an endpoint_pb2.ClusterLoadAssignment whose cluster_name is
    #   service.name, with one endpoint_components_pb2.LocalityLbEndpoints holding an
    #   LbEndpoint per endpoint of the service: its address (address_pb2.Address with a
    #   SocketAddress) and load_balancing_weight=wrappers_pb2.UInt32Value(value=weight).
    return None


def snapshot_version(resources: list[Message]) -> str:
    """Step 5: the snapshot's version. Envoy is only sent a snapshot whose version
    differs from the one it has, so the version must change whenever the resources
    do, and should not change when they do not (an identical save pushes nothing)."""
    # TODO(step 5): derive the version from the resources (for example a digest of each
    #   resource.SerializeToString(deterministic=True)). A fixed version means Envoy
    #   never hears of a change.
    return "v1"


# -- serving (given) ------------------------------------------------------------------

def build_snapshot(intent: Intent) -> Snapshot:
    resources = [build_listener(intent), build_route_configuration(intent)]
    for service in intent.services:
        resources += [build_cluster(service), build_load_assignment(service)]
    resources = [r for r in resources if r is not None]
    return Snapshot(resources, version=snapshot_version(resources))


def apply(cache: SnapshotCache, text: str, source: str) -> None:
    """One version of the intent: translate, check, hand to the cache (which pushes).
    Whatever goes wrong, the previous snapshot stays and Envoy keeps serving it."""
    try:
        snapshot = build_snapshot(parse_intent(text))
    except IntentError as error:
        log.error("%s: %s; keeping the previous configuration", source, error)
        return
    except Exception:  # noqa: BLE001 - a bug in a build_* function must not stop the control plane
        log.exception("building the snapshot failed; keeping the previous configuration")
        return
    problems = snapshot.problems()
    if problems:
        log.error("the snapshot is inconsistent, not pushed:\n  %s", "\n  ".join(problems))
        return
    if cache.set_snapshot(NODE_ID, snapshot):
        log.info("pushing version %s to %s: %s", snapshot.version, NODE_ID, snapshot)
    else:
        log.info("version %s is what %s already has: nothing to push", snapshot.version, NODE_ID)


async def main() -> None:
    parser = argparse.ArgumentParser(description="Lab 06's control plane: intent.yaml -> xDS over ADS.")
    parser.add_argument("--intent", default="intent.yaml", help="the intent file to follow")
    parser.add_argument("--xds-port", type=int, default=18000, help="where Envoy connects (ADS, gRPC)")
    parser.add_argument("--admin-port", type=int, default=18001, help="the admin view (HTTP JSON)")
    parser.add_argument("--verbose", action="store_true", help="log every request and response")
    options = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if options.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    cache = SnapshotCache()
    server = XdsServer(cache, port=options.xds_port, admin_port=options.admin_port)
    await server.start()
    async for text in watch_file(options.intent):
        apply(cache, text, options.intent)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
