"""The xDS resource types this toolkit serves, and the order they must reach a proxy in.

Envoy names a resource type by its protobuf type URL. Two facts about each type matter
to a server:

- Whether a proxy asks for it by name. Listeners and clusters are *wildcard* types: a
  proxy may ask for "all of them" (Envoy does) or name the ones it wants (proxyless
  clients do). Routes, endpoints and secrets are asked for by name, the names the proxy
  found inside listeners and clusters.
- When it may change relative to the others (make-before-break). A route must never
  point at a cluster the proxy does not know yet, so clusters, their endpoints and
  secrets go first (`FIRST`), listeners and routes after (`THEN`), and clusters and
  secrets that disappear are removed last (`REMOVED_LAST`), once no route uses them.
"""

from __future__ import annotations

import importlib

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

PREFIX = "type.googleapis.com/"

LISTENER = PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
SECRET = PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# The short names Envoy's documentation and stats use.
SHORT_NAMES = {LISTENER: "LDS", ROUTE: "RDS", CLUSTER: "CDS", ENDPOINT: "EDS", SECRET: "SDS"}

WILDCARD = frozenset({LISTENER, CLUSTER})
FIRST = (SECRET, CLUSTER, ENDPOINT)
REMOVED_LAST = frozenset({CLUSTER, SECRET})


def short(type_url: str) -> str:
    """`CDS` for the cluster type URL; the message name for any other type."""
    return SHORT_NAMES.get(type_url, type_url.rsplit(".", 1)[-1])


def type_url_of(message: Message) -> str:
    return PREFIX + message.DESCRIPTOR.full_name


def name_of(message: Message) -> str:
    """The name a proxy asks for: `name`, or `cluster_name` for endpoints."""
    if type_url_of(message) == ENDPOINT:
        return message.cluster_name
    if "name" not in message.DESCRIPTOR.fields_by_name:
        raise ValueError(f"{message.DESCRIPTOR.full_name} has no `name`: it cannot be an xDS resource")
    return message.name


def goes_first(type_url: str) -> bool:
    """True for the types that must be in place before listeners and routes use them."""
    return type_url in FIRST


# Where the messages of the types above live in xds-protos; imported on first use.
_MODULES = {
    LISTENER: "envoy.config.listener.v3.listener_pb2",
    ROUTE: "envoy.config.route.v3.route_pb2",
    CLUSTER: "envoy.config.cluster.v3.cluster_pb2",
    ENDPOINT: "envoy.config.endpoint.v3.endpoint_pb2",
    SECRET: "envoy.extensions.transport_sockets.tls.v3.secret_pb2",
    PREFIX + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager":
        "envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2",
}


def message_class(type_url: str) -> type[Message]:
    """The protobuf class for TYPE_URL (its module imported if needed)."""
    full_name = type_url[len(PREFIX):] if type_url.startswith(PREFIX) else type_url
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName(full_name)
    except KeyError:
        module = _MODULES.get(PREFIX + full_name)
        if module is None:
            raise KeyError(f"unknown message type {full_name!r}: import its _pb2 module first") from None
        importlib.import_module(module)
        descriptor = pool.FindMessageTypeByName(full_name)
    return message_factory.GetMessageClass(descriptor)
