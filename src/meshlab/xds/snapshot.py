"""A snapshot: everything one proxy should run, as one immutable, versioned set.

    snapshot = Snapshot([listener, route_config, cluster, load_assignment])
    snapshot.version        # derived from the content: same content, same version
    snapshot.problems()     # [] when every reference resolves (see `consistent`)

Resources are kept as their serialized bytes, so nothing can change a snapshot after
it is built (a protobuf message can be mutated; bytes cannot), and sending a resource
is wrapping bytes that are already there. Each resource has its own version, a digest
of its bytes; the snapshot's version is a digest of all of them unless the caller
names one. Because the version follows the content, setting an identical snapshot
again is recognised as "nothing new" and no proxy is disturbed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Iterable, Iterator, Mapping

from google.protobuf import any_pb2
from google.protobuf.message import Message

from meshlab.xds import types

_HCM = types.PREFIX + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_DIGEST_CHARS = 12


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]


@dataclass(frozen=True)
class Resource:
    """One xDS resource: its type, name, serialized body and content version."""

    type_url: str
    name: str
    body: bytes = field(repr=False)
    version: str

    @classmethod
    def of(cls, message: Message) -> "Resource":
        body = message.SerializeToString(deterministic=True)
        return cls(types.type_url_of(message), types.name_of(message), body, digest(body))

    def message(self) -> Message:
        """A fresh, parsed copy of the resource."""
        return types.message_class(self.type_url).FromString(self.body)

    @cached_property
    def packed(self) -> any_pb2.Any:
        """The resource as an `Any`, as it travels in a discovery response."""
        return any_pb2.Any(type_url=self.type_url, value=self.body)


class Snapshot:
    """An immutable set of resources per type URL, with one version for the whole set.

    VERSION, when given, is used as is (a label a person chose); otherwise it is a
    digest of the content. Either way a proxy is only sent a snapshot whose version
    differs from the one it acknowledged, so a hand-picked version must change
    whenever the content does.
    """

    def __init__(self, resources: Iterable[Message | Resource] = (), *, version: str | None = None):
        by_type: dict[str, dict[str, Resource]] = {}
        for item in resources:
            resource = item if isinstance(item, Resource) else Resource.of(item)
            if not resource.name:
                raise ValueError(f"a {types.short(resource.type_url)} resource has an empty name")
            named = by_type.setdefault(resource.type_url, {})
            if resource.name in named:
                raise ValueError(f"two {types.short(resource.type_url)} resources are named {resource.name!r}")
            named[resource.name] = resource
        self._resources = MappingProxyType({t: MappingProxyType(dict(sorted(r.items())))
                                            for t, r in sorted(by_type.items())})
        self.content_version = digest("\n".join(
            f"{t}\t{name}\t{r.version}" for t, named in self._resources.items() for name, r in named.items()
        ).encode())
        if version is not None and not str(version):
            raise ValueError("a snapshot version must not be empty")
        self.version = str(version) if version is not None else self.content_version
        self._provided: dict[str, frozenset[str]] = {}

    def __repr__(self) -> str:
        counts = ", ".join(f"{types.short(t)}={len(r)}" for t, r in self._resources.items())
        return f"Snapshot(version={self.version!r}, {counts or 'empty'})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Snapshot) and self.version == other.version
                and self.content_version == other.content_version)

    def __hash__(self) -> int:
        return hash((self.version, self.content_version))

    def __len__(self) -> int:
        return sum(len(r) for r in self._resources.values())

    def __iter__(self) -> Iterator[Resource]:
        for named in self._resources.values():
            yield from named.values()

    @property
    def type_urls(self) -> tuple[str, ...]:
        return tuple(self._resources)

    def resources(self, type_url: str) -> Mapping[str, Resource]:
        """The resources of one type, by name (empty when the snapshot has none)."""
        return self._resources.get(type_url, MappingProxyType({}))

    def get(self, type_url: str, name: str) -> Message | None:
        resource = self.resources(type_url).get(name)
        return resource.message() if resource else None

    # -- references between resources -------------------------------------------

    @cached_property
    def route_references(self) -> Mapping[str, frozenset[str]]:
        """Listener name -> the route configurations (RDS names) it asks for."""
        return MappingProxyType({name: frozenset(rds_names(r.message()))
                                 for name, r in self.resources(types.LISTENER).items()})

    @cached_property
    def endpoint_references(self) -> Mapping[str, str]:
        """Cluster name -> the endpoints (EDS name) it asks for, for EDS clusters."""
        refs = {}
        for name, resource in self.resources(types.CLUSTER).items():
            eds = eds_name(resource.message())
            if eds is not None:
                refs[name] = eds
        return MappingProxyType(refs)

    def referenced(self, type_url: str) -> frozenset[str]:
        """The names of TYPE_URL that other resources of this snapshot ask for."""
        if type_url == types.ROUTE:
            return frozenset().union(*self.route_references.values())
        if type_url == types.ENDPOINT:
            return frozenset(self.endpoint_references.values())
        return frozenset()

    def provided_references(self, type_url: str) -> frozenset[str]:
        """The names of TYPE_URL that are both asked for and in the snapshot."""
        found = self._provided.get(type_url)
        if found is None:
            found = self._provided[type_url] = frozenset(self.referenced(type_url) & self.resources(type_url).keys())
        return found

    def provided_references_of(self, type_url: str, parents: Iterable[str]) -> frozenset[str]:
        """Like `provided_references`, for what only PARENTS ask for: the routes of these
        listeners, or the endpoints of these clusters (a client that asks for its
        listeners and clusters by name needs no more)."""
        names: set[str] = set()
        if type_url == types.ROUTE:
            for listener in parents:
                names |= self.route_references.get(listener, frozenset())
        elif type_url == types.ENDPOINT:
            references = self.endpoint_references
            names = {references[cluster] for cluster in parents if cluster in references}
        return frozenset(names & self.resources(type_url).keys())

    def problems(self) -> list[str]:
        """What makes the snapshot inconsistent, in words; [] when it is consistent."""
        found = []
        routes = self.resources(types.ROUTE)
        for listener, names in self.route_references.items():
            for name in sorted(names - routes.keys()):
                found.append(f"listener {listener!r} asks for route configuration {name!r}, which the snapshot lacks")
        for name in sorted(routes.keys() - self.referenced(types.ROUTE)):
            found.append(f"route configuration {name!r} is not used by any listener (over RDS)")
        endpoints = self.resources(types.ENDPOINT)
        for cluster, name in self.endpoint_references.items():
            if name not in endpoints:
                found.append(f"EDS cluster {cluster!r} asks for endpoints {name!r}, which the snapshot lacks")
        for name in sorted(endpoints.keys() - self.referenced(types.ENDPOINT)):
            found.append(f"endpoints {name!r} (ClusterLoadAssignment) are not used by any EDS cluster")
        return found

    def consistent(self) -> bool:
        """True when every RDS name a listener asks for is in the snapshot and used,
        and every EDS name a cluster asks for is in the snapshot and used. A proxy given
        an inconsistent snapshot waits for what is missing (its listeners and clusters
        stay warming) or holds resources nothing uses."""
        return not self.problems()


def rds_names(listener: Message) -> list[str]:
    """Route configuration names a listener's HTTP connection managers fetch over RDS."""
    chains = [*listener.filter_chains]
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    configs = [f.typed_config for chain in chains for f in chain.filters if f.HasField("typed_config")]
    if listener.HasField("api_listener"):
        configs.append(listener.api_listener.api_listener)
    names = []
    for config in configs:
        if config.type_url != _HCM:
            continue
        hcm = types.message_class(_HCM).FromString(config.value)
        if hcm.WhichOneof("route_specifier") == "rds":
            names.append(hcm.rds.route_config_name)
    return names


def eds_name(cluster: Message) -> str | None:
    """The endpoints name an EDS cluster fetches (None for other clusters)."""
    if cluster.WhichOneof("cluster_discovery_type") != "type" or cluster.type != cluster.EDS:
        return None
    return cluster.eds_cluster_config.service_name or cluster.name

