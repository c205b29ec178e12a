"""Snapshots: versions follow the content, nothing mutates them, consistency is exact."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshlab.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot, sample

names = st.text(alphabet="abcdefgh", min_size=1, max_size=4)


@st.composite
def meshes(draw):
    """A random set of resources: listeners asking for routes, EDS clusters asking for
    endpoints, and route and endpoint resources that may or may not match."""
    listeners = draw(st.dictionaries(names, names, max_size=3))          # listener -> route name
    routes = draw(st.sets(names, max_size=3))
    clusters = draw(st.sets(names, max_size=3))
    endpoints = draw(st.sets(names, max_size=3))
    ports = draw(st.lists(st.integers(1, 65535), min_size=1, max_size=2))
    resources = [sample.http_listener(name, 10000 + i, route) for i, (name, route) in enumerate(listeners.items())]
    resources += [sample.route_configuration(name, {"/": "c"}) for name in routes]
    resources += [sample.eds_cluster(name) for name in clusters]
    resources += [sample.load_assignment(name, [("127.0.0.1", p, 1) for p in ports]) for name in endpoints]
    return listeners, routes, clusters, endpoints, resources


@settings(max_examples=60, deadline=None)
@given(meshes(), st.randoms(use_true_random=False))
def test_version_is_the_content_in_any_order(mesh, random):
    *_, resources = mesh
    shuffled = list(resources)
    random.shuffle(shuffled)
    assert Snapshot(resources).version == Snapshot(shuffled).version


def changed(resource):
    """A copy of RESOURCE with one field changed."""
    copy = type(resource)()
    copy.CopyFrom(resource)
    if copy.DESCRIPTOR.name == "ClusterLoadAssignment":
        copy.policy.overprovisioning_factor.value = 99
    elif copy.DESCRIPTOR.name == "Listener":
        copy.address.socket_address.port_value += 1
    elif copy.DESCRIPTOR.name == "Cluster":
        copy.connect_timeout.seconds += 1
    else:
        copy.virtual_hosts[0].domains.append("example.com")
    return copy


@settings(max_examples=60, deadline=None)
@given(meshes(), st.data())
def test_any_change_changes_the_version(mesh, data):
    *_, resources = mesh
    before = Snapshot(resources)
    added = resources + [sample.load_assignment("extra-endpoints", [("127.0.0.1", 1, 1)])]
    assert Snapshot(added).version != before.version
    if resources:
        index = data.draw(st.integers(0, len(resources) - 1))
        edited = resources[:index] + [changed(resources[index])] + resources[index + 1:]
        assert Snapshot(edited).version != before.version


@settings(max_examples=60, deadline=None)
@given(meshes())
def test_consistent_exactly_when_references_match(mesh):
    listeners, routes, clusters, endpoints, resources = mesh
    snapshot = Snapshot(resources)
    referenced_routes = set(listeners.values())
    assert snapshot.referenced(ROUTE) == referenced_routes
    assert snapshot.referenced(ENDPOINT) == clusters
    assert snapshot.consistent() == (referenced_routes == routes and clusters == endpoints)
    problems = " ".join(snapshot.problems())
    for missing in referenced_routes - routes:
        assert repr(missing) in problems
    for unused in endpoints - clusters:
        assert repr(unused) in problems


def test_a_snapshot_cannot_be_changed_through_its_inputs():
    cluster = sample.eds_cluster("web")
    snapshot = Snapshot([cluster])
    version = snapshot.version
    cluster.name = "changed"
    assert snapshot.version == version
    assert list(snapshot.resources(CLUSTER)) == ["web"]
    copy = snapshot.get(CLUSTER, "web")
    copy.name = "also changed"
    assert snapshot.get(CLUSTER, "web").name == "web"
    with pytest.raises(TypeError):
        snapshot.resources(CLUSTER)["other"] = None  # a read-only mapping


def test_a_chosen_version_is_kept_and_same_content_compares_by_both():
    resources = sample.mesh(listener_port=10000, routes={"/": "a"}, endpoints={"a": [("127.0.0.1", 8080, 1)]})
    labelled = Snapshot(resources, version="release-7")
    assert labelled.version == "release-7"
    assert labelled.content_version == Snapshot(resources).version
    assert labelled != Snapshot(resources) and labelled == Snapshot(list(reversed(resources)), version="release-7")
    assert labelled.consistent(), labelled.problems()
    assert len(labelled) == 4 and {r.type_url for r in labelled} == {LISTENER, ROUTE, CLUSTER, ENDPOINT}


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="two CDS resources are named 'a'"):
        Snapshot([sample.eds_cluster("a"), sample.eds_cluster("a")])
    with pytest.raises(ValueError, match="empty name"):
        Snapshot([sample.eds_cluster("")])
    with pytest.raises(ValueError, match="must not be empty"):
        Snapshot([], version="")
