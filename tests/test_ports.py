"""Busy ports are found before a lab starts, with the process that holds them."""

from __future__ import annotations

import os
import socket

import pytest

from meshlab import ports
from meshlab.errors import PortBusy


@pytest.fixture
def listening():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def test_a_listening_port_is_busy_and_its_holder_is_named(listening):
    assert not ports.is_free(listening)
    holder = ports.holder(listening)
    assert holder is not None and holder.pid == os.getpid()


def test_a_free_port_is_free():
    port = ports.free_port()
    assert ports.is_free(port)
    assert ports.holder(port) is None


def test_ensure_free_names_service_port_and_holder(listening):
    with pytest.raises(PortBusy) as caught:
        ports.ensure_free([("sidecar", "listener", listening)], lab_ref="lab 01")
    error = caught.value
    assert f"127.0.0.1:{listening} (sidecar listener)" in error.details
    assert f"PID {os.getpid()}" in error.details
    assert error.fix
