"""A check's ports come from the lab's manifest: `lab.port` and `lab.url`."""

from __future__ import annotations

import pytest

from meshlab.session import LabSession


@pytest.fixture
def session(course, tmp_path):
    lab = LabSession(course.find(1), tmp_path, runtime=None, owned=False)
    yield lab
    lab.close()


def test_a_port_by_service_and_role(session):
    assert session.port("sidecar", "listener") == 10000 and session.port("sidecar", "admin") == 9901
    assert session.url("sidecar", "listener", "/") == "http://127.0.0.1:10000/"


def test_a_service_with_one_port_needs_no_role(session):
    assert session.port("app") == 8080 and session.url("app") == "http://127.0.0.1:8080"


def test_a_service_with_several_ports_needs_its_role(session):
    with pytest.raises(ValueError, match="listener"):
        session.port("sidecar")


def test_an_address_is_the_pods_for_a_service_in_a_pod(course, tmp_path):
    lab = LabSession(course.find(7), tmp_path, runtime=None, owned=False)
    try:
        assert lab.address("remote") == "10.77.7.3:8080" and lab.address("db") == "10.77.7.3:5432"
        assert lab.address("sidecar", "inbound") == "10.77.7.2:15006"
    finally:
        lab.close()


def test_an_address_is_loopback_for_a_service_outside_pods(session):
    assert session.address("sidecar", "listener") == "127.0.0.1:10000"
