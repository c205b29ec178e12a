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
