"""Lab 11 — the Mini-Mesh's control plane (starter): the manifest (mesh.yaml) translated into what
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
    # TODO(step 1): the listener "outbound" on 0.0.0.0:15001 (inject.OUTBOUND_PORT) with the listener filter
    # envoy.filters.listener.original_dst; one FilterChain per service of node.mesh.services, its
    # filter_chain_match on prefix_ranges [the service's virtual address /32] and destination_port; an
    # HTTP service: an HTTP connection manager with RDS (route_config_name = the service's name, ads());
    # a TCP service: tcp_proxy to its clusters (weighted_clusters from node.mesh.rules(name)[0]).
    # TODO(step 6): in every HTTP chain, faults.http_filter() before the router.
    return None


def outbound_routes(node: Node, name: str) -> route_pb2.RouteConfiguration:
    """Step 1: the traffic rules of service NAME, first match first."""
    # TODO(step 1): a RouteConfiguration named NAME, one virtual host for "*", one route per rule of
    # node.mesh.rules(name) in order: prefix "/" plus the rule's headers (exact), to weighted_clusters
    # node.mesh.outbound_cluster(name, version) with each weight.
    # TODO(step 6): each route's typed_per_filter_config=faults.per_route(node, name).
    return None


def outbound_cluster(node: Node, name: str, version: str) -> cluster_pb2.Cluster:
    """Steps 1 and 3: an EDS cluster per version of a service; its connections are
    mutual TLS, and the far side must prove the service's SPIFFE ID."""
    # TODO(step 1): an EDS cluster named node.mesh.outbound_cluster(name, version), eds_config ads().
    # TODO(step 3): its transport_socket: envoy.transport_sockets.tls with an UpstreamTlsContext whose
    # common_tls_context is tls_context(node.mesh.spiffe_id(name)).
    return None


def outbound_endpoints(node: Node, name: str, version: str) -> endpoint_pb2.ClusterLoadAssignment:
    """Step 1: where the pods of that version are."""
    # TODO(step 1): the ClusterLoadAssignment of that cluster: node.addresses.endpoints(node.mesh, name, version).
    return None


# -- step 2: inbound --------------------------------------------------------------------

def inbound_listener(node: Node) -> listener_pb2.Listener:
    """Steps 2-4: TLS with a client certificate required, authorization, the app."""
    # TODO(step 2): the listener "inbound" on 0.0.0.0:15006 (inject.INBOUND_PORT), one filter chain to
    # the cluster node.mesh.inbound_cluster(port): for HTTP an HTTP connection manager with an inline
    # route_config (every path to that cluster), for TCP a tcp_proxy.
    # TODO(step 3): the chain's transport_socket: a DownstreamTlsContext that requires a client certificate,
    # common_tls_context=tls_context(None); and the caller's ID to the app (forward_client_cert_details).
    # TODO(step 4): authorization(node) in an RBAC filter before the router (HTTP) or the tcp_proxy (TCP).
    return None


def inbound_cluster(node: Node) -> cluster_pb2.Cluster:
    """Step 2: the app, on the pod's loopback."""
    # TODO(step 2): a STATIC cluster node.mesh.inbound_cluster(port): the app at 127.0.0.1:port.
    return None


# -- step 3: identities over SDS -------------------------------------------------------

def tls_context(peer_id: str | None) -> tls_pb2.CommonTlsContext:
    """Step 3: the workload's certificate and the trust bundle, both by name over SDS
    (never files); with PEER_ID, the peer's certificate must carry exactly that ID."""
    # TODO(step 3): a CommonTlsContext: the certificate CERTIFICATE and the trust bundle TRUST_BUNDLE, both as
    # SdsSecretConfig (secret_pb2) with sds_config=ads(); with PEER_ID, a default validation context that
    # matches the peer's URI SAN exactly.
    return None


def secrets(node: Node) -> list[secret_pb2.Secret]:
    """Step 3: the two secrets, from the control plane's memory."""
    # TODO(step 3): two Secrets: CERTIFICATE (tls_certificate: node.certificate.chain_pem and .key_pem, inline)
    # and TRUST_BUNDLE (validation_context: trusted_ca = node.trust_bundle_pem, inline).
    return []


# -- step 4: authorization ---------------------------------------------------------------

def authorization(node: Node) -> rbac_pb2.RBAC:
    """Step 4: allow exactly the manifest's callers, by the SPIFFE ID of the verified
    peer certificate; anything else is denied."""
    # TODO(step 4): an RBAC (action ALLOW) with one policy: any permission, a principal
    # `authenticated.principal_name` (exact) per caller of node.mesh.callers(node.workload.service):
    # node.mesh.spiffe_id(caller), spiffe://<trust domain>/ns/<namespace>/sa/<service>. No caller: no
    # policy at all (Envoy rejects a policy without principals; an ALLOW RBAC without policies denies all).
    return None


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
