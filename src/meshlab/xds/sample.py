"""A small, complete set of xDS resources: an HTTP listener whose routes (over RDS)
send path prefixes to EDS clusters. For tests, benchmarks and demos; a control plane
that translates its own intent builds its own (that is what lab 06 is about).

    resources = mesh(listener_port=10000, routes={"/": "web"},
                     endpoints={"web": [("127.0.0.1", 8080, 1)]})
    Snapshot(resources)
"""

from __future__ import annotations

from typing import Iterable, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

Endpoint = tuple[str, int, int]  # address, port, weight


def ads() -> config_source_pb2.ConfigSource:
    """"Over the same ADS stream": where listeners find routes and clusters endpoints."""
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def packed(message: Message) -> any_pb2.Any:
    holder = any_pb2.Any()
    holder.Pack(message, deterministic=True)
    return holder


def http_listener(name: str, port: int, route_name: str, *, address: str = "127.0.0.1",
                  bind: bool = True) -> listener_pb2.Listener:
    """BIND=False: Envoy takes the listener without binding its port (many proxies on
    one machine can then share a configuration)."""
    manager = hcm.HttpConnectionManager(
        stat_prefix=name,
        rds=hcm.Rds(route_config_name=route_name, config_source=ads()),
        http_filters=[hcm.HttpFilter(name="envoy.filters.http.router", typed_config=packed(router_pb2.Router()))],
    )
    return listener_pb2.Listener(
        name=name,
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[listener_components_pb2.Filter(
            name="envoy.filters.network.http_connection_manager", typed_config=packed(manager))])],
        bind_to_port=None if bind else wrappers_pb2.BoolValue(value=False),
    )


def route_configuration(name: str, routes: Mapping[str, str]) -> route_pb2.RouteConfiguration:
    """ROUTES: path prefix -> cluster, longest prefix first."""
    entries = [route_components_pb2.Route(match=route_components_pb2.RouteMatch(prefix=prefix),
                                          route=route_components_pb2.RouteAction(cluster=cluster))
               for prefix, cluster in sorted(routes.items(), key=lambda item: -len(item[0]))]
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[
        route_components_pb2.VirtualHost(name="all", domains=["*"], routes=entries)])


def eds_cluster(name: str, *, connect_timeout: float = 1.0) -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads()),
        connect_timeout=duration_pb2.Duration(nanos=int(connect_timeout * 1e9) % 10**9,
                                              seconds=int(connect_timeout)),
    )


def load_assignment(cluster: str, endpoints: Iterable[Endpoint]) -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster, endpoints=[
        endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
                    socket_address=address_pb2.SocketAddress(address=address, port_value=port))),
                load_balancing_weight=wrappers_pb2.UInt32Value(value=weight))
            for address, port, weight in endpoints])])


def mesh(*, listener_port: int, routes: Mapping[str, str], endpoints: Mapping[str, Iterable[Endpoint]],
         listener: str = "ingress", route_name: str = "routes", bind: bool = True) -> list[Message]:
    """One listener, one route configuration, and an EDS cluster with its endpoints per
    entry of ENDPOINTS (cluster -> [(address, port, weight)])."""
    resources: list[Message] = [http_listener(listener, listener_port, route_name, bind=bind),
                                route_configuration(route_name, routes)]
    for cluster, hosts in endpoints.items():
        resources += [eds_cluster(cluster), load_assignment(cluster, hosts)]
    return resources
