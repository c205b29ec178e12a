"""Lab 11 — the Mini-Mesh's control plane: the manifest (mesh.yaml) translated into what
each sidecar runs.

    python control_plane.py --mesh mesh.yaml

The course gives the rest (meshlab.mesh.control): reading and following mesh.yaml, the
certificate authority and each workload's certificate, serving over ADS, the admin API
(GET /status, POST /rotate). Your part is `build(node)`: the resources of ONE sidecar,
the node `node.name` (like `api-v2`), in four steps (step 5 watches it hold).

Every sidecar has two listeners, both fed by the pod's capture rules (lab 07):
- `outbound` (port 15001): what the app sends. One filter chain per service of the
  mesh, chosen by the original destination (the service's virtual address and port);
  HTTP services are routed by the traffic rules, TCP services are proxied as they are;
- `inbound` (port 15006): what arrives for the app: mutual TLS with the mesh's
  certificates, then authorization by the caller's SPIFFE ID, then the app on
  127.0.0.1.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.listener.original_dst.v3 import original_dst_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.message import Message

import faults
from meshlab.mesh import control, inject
from meshlab.mesh.control import Node

CERTIFICATE = "default"      # the SDS secret with the workload's certificate and key
TRUST_BUNDLE = "ROOTCA"      # the SDS secret with the CA certificate peers must chain to


def ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(ads=config_source_pb2.AggregatedConfigSource(),
                                          resource_api_version=config_source_pb2.V3)


def pack(message: Message) -> any_pb2.Any:
    holder = any_pb2.Any()
    holder.Pack(message)
    return holder


def socket(address: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port))


def router() -> hcm.HttpFilter:
    return hcm.HttpFilter(name="envoy.filters.http.router", typed_config=pack(router_pb2.Router()))


# -- step 1: outbound (LDS, RDS, CDS, EDS) ---------------------------------------------

def outbound_listener(node: Node) -> listener_pb2.Listener:
    """Step 1: one filter chain per service, matched on the original destination."""
    chains = []
    for name, service in node.mesh.services.items():
        match = listener_components_pb2.FilterChainMatch(
            prefix_ranges=[address_pb2.CidrRange(address_prefix=node.addresses.services[name],
                                                 prefix_len=wrappers_pb2.UInt32Value(value=32))],
            destination_port=wrappers_pb2.UInt32Value(value=service.port))
        if service.protocol == "http":
            manager = hcm.HttpConnectionManager(
                stat_prefix=f"outbound_{name}",
                rds=hcm.Rds(route_config_name=name, config_source=ads()),
                http_filters=[faults.http_filter(), router()])
            network = listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager",
                                                     typed_config=pack(manager))
        else:
            weights = node.mesh.rules(name)[0].weights
            proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=f"outbound_{name}", weighted_clusters=tcp_proxy_pb2.TcpProxy.
                                           WeightedCluster(clusters=[
                                               tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(
                                                   name=node.mesh.outbound_cluster(name, v), weight=w)
                                               for v, w in weights.items() if w > 0]))
            network = listener_components_pb2.Filter(name="envoy.filters.network.tcp_proxy", typed_config=pack(proxy))
        chains.append(listener_components_pb2.FilterChain(name=f"outbound_{name}", filter_chain_match=match,
                                                          filters=[network]))
    return listener_pb2.Listener(
        name="outbound", address=socket("0.0.0.0", inject.OUTBOUND_PORT),
        listener_filters=[listener_components_pb2.ListenerFilter(
            name="envoy.filters.listener.original_dst", typed_config=pack(original_dst_pb2.OriginalDst()))],
        filter_chains=chains)


def outbound_routes(node: Node, name: str) -> route_pb2.RouteConfiguration:
    """Step 1: the traffic rules of service NAME, first match first."""
    routes = []
    for rule in node.mesh.rules(name):
        match = route_components_pb2.RouteMatch(prefix="/", headers=[
            route_components_pb2.HeaderMatcher(name=header, string_match=string_pb2.StringMatcher(exact=value))
            for header, value in rule.headers.items()])
        action = route_components_pb2.RouteAction(weighted_clusters=route_components_pb2.WeightedCluster(clusters=[
            route_components_pb2.WeightedCluster.ClusterWeight(name=node.mesh.outbound_cluster(name, version),
                                                               weight=wrappers_pb2.UInt32Value(value=weight))
            for version, weight in rule.weights.items() if weight > 0]))
        routes.append(route_components_pb2.Route(match=match, route=action,
                                                 typed_per_filter_config=faults.per_route(node, name)))
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[
        route_components_pb2.VirtualHost(name=name, domains=["*"], routes=routes)])


def outbound_cluster(node: Node, name: str, version: str) -> cluster_pb2.Cluster:
    """Steps 1 and 3: an EDS cluster per version of a service; its connections are
    mutual TLS, and the far side must prove the service's SPIFFE ID."""
    return cluster_pb2.Cluster(
        name=node.mesh.outbound_cluster(name, version), type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads()),
        connect_timeout=duration_pb2.Duration(seconds=1),
        transport_socket=base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(
            tls_pb2.UpstreamTlsContext(common_tls_context=tls_context(node.mesh.spiffe_id(name))))))


def outbound_endpoints(node: Node, name: str, version: str) -> endpoint_pb2.ClusterLoadAssignment:
    """Step 1: where the pods of that version are."""
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=node.mesh.outbound_cluster(name, version),
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[
            endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(address=socket(ip, port)))
            for ip, port in node.addresses.endpoints(node.mesh, name, version)])])


# -- step 2: inbound --------------------------------------------------------------------

def inbound_listener(node: Node) -> listener_pb2.Listener:
    """Steps 2-4: TLS with a client certificate required, authorization, the app."""
    service = node.mesh.service(node.workload.service)
    cluster = node.mesh.inbound_cluster(service.port)
    policy = authorization(node)
    if service.protocol == "http":
        manager = hcm.HttpConnectionManager(
            stat_prefix=f"inbound_{service.port}",
            # The app learns who called: the verified certificate's URI, never a header a caller sent.
            forward_client_cert_details=hcm.HttpConnectionManager.SANITIZE_SET,
            set_current_client_cert_details=hcm.HttpConnectionManager.SetCurrentClientCertDetails(uri=True),
            route_config=route_pb2.RouteConfiguration(name="inbound", virtual_hosts=[route_components_pb2.VirtualHost(
                name="inbound", domains=["*"], routes=[route_components_pb2.Route(
                    match=route_components_pb2.RouteMatch(prefix="/"),
                    route=route_components_pb2.RouteAction(cluster=cluster))])]),
            http_filters=[hcm.HttpFilter(name="envoy.filters.http.rbac", typed_config=pack(http_rbac.RBAC(rules=policy))),
                          router()])
        filters = [listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager",
                                                  typed_config=pack(manager))]
    else:
        filters = [
            listener_components_pb2.Filter(name="envoy.filters.network.rbac", typed_config=pack(
                network_rbac.RBAC(stat_prefix=f"inbound_{service.port}.", rules=policy))),
            listener_components_pb2.Filter(name="envoy.filters.network.tcp_proxy", typed_config=pack(
                tcp_proxy_pb2.TcpProxy(stat_prefix=f"inbound_{service.port}", cluster=cluster))),
        ]
    tls = tls_pb2.DownstreamTlsContext(require_client_certificate=wrappers_pb2.BoolValue(value=True),
                                       common_tls_context=tls_context(None))
    return listener_pb2.Listener(
        name="inbound", address=socket("0.0.0.0", inject.INBOUND_PORT),
        filter_chains=[listener_components_pb2.FilterChain(
            name="inbound", filters=filters,
            transport_socket=base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=pack(tls)))])


def inbound_cluster(node: Node) -> cluster_pb2.Cluster:
    """Step 2: the app, on the pod's loopback."""
    port = node.mesh.service(node.workload.service).port
    name = node.mesh.inbound_cluster(port)
    return cluster_pb2.Cluster(
        name=name, type=cluster_pb2.Cluster.STATIC, connect_timeout=duration_pb2.Duration(seconds=1),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(cluster_name=name, endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=socket("127.0.0.1", port)))])]))


# -- step 3: identities over SDS -------------------------------------------------------

def tls_context(peer_id: str | None) -> tls_pb2.CommonTlsContext:
    """Step 3: the workload's certificate and the trust bundle, both by name over SDS
    (never files); with PEER_ID, the peer's certificate must carry exactly that ID."""
    sds = lambda name: secret_pb2.SdsSecretConfig(name=name, sds_config=ads())  # noqa: E731
    matchers = [] if peer_id is None else [common_pb2.SubjectAltNameMatcher(
        san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=string_pb2.StringMatcher(exact=peer_id))]
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[sds(CERTIFICATE)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(match_typed_subject_alt_names=matchers),
            validation_context_sds_secret_config=sds(TRUST_BUNDLE)))


def secrets(node: Node) -> list[secret_pb2.Secret]:
    """Step 3: the two secrets, from the control plane's memory."""
    return [
        secret_pb2.Secret(name=CERTIFICATE, tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=node.certificate.chain_pem),
            private_key=base_pb2.DataSource(inline_string=node.certificate.key_pem))),
        secret_pb2.Secret(name=TRUST_BUNDLE, validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_string=node.trust_bundle_pem))),
    ]


# -- step 4: authorization ---------------------------------------------------------------

def authorization(node: Node) -> rbac_pb2.RBAC:
    """Step 4: allow exactly the manifest's callers, by the SPIFFE ID of the verified
    peer certificate; anything else is denied."""
    callers = node.mesh.callers(node.workload.service)
    principals = [rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(
        principal_name=string_pb2.StringMatcher(exact=node.mesh.spiffe_id(caller)))) for caller in callers]
    policies = {"callers": rbac_pb2.Policy(permissions=[rbac_pb2.Permission(any=True)],
                                           principals=principals)} if principals else {}
    return rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies=policies)


# -- everything one sidecar runs (given) ------------------------------------------------

def build(node: Node) -> list[Message]:
    """The node's whole snapshot: what steps 1-4 build."""
    resources: list[Message] = [outbound_listener(node), inbound_listener(node), inbound_cluster(node),
                                *secrets(node)]
    for name, service in node.mesh.services.items():
        if service.protocol == "http":
            resources.append(outbound_routes(node, name))
        for version in service.versions:
            resources += [outbound_cluster(node, name, version), outbound_endpoints(node, name, version)]
    return resources


if __name__ == "__main__":
    control.main(build, "Lab 11's control plane: mesh.yaml -> every sidecar's xDS.")
