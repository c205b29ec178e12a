"""What the Docker tests share: an engine and the toolbox image, or a clear reason why not.

On a developer machine without Docker these tests are skipped, with the reason. In CI
(`CI=true`) a missing engine or image is a failure: CI must prove the Docker path.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

import pytest

from meshlab.container.engine import BASE_IMAGE, TOOLBOX_IMAGE, connect, find_image
from meshlab.errors import MeshlabError


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the Docker tests cannot run: {reason}")
    pytest.skip(f"no Docker here: {reason}")


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = connect(timeout=60)
    except MeshlabError as error:
        _unavailable(f"{error.message} ({error.fix})")
    yield client
    client.close()


@pytest.fixture(scope="session")
def toolbox(docker_client):
    """The toolbox image (`meshlab image build`), as built from this checkout."""
    for name in (BASE_IMAGE, TOOLBOX_IMAGE):
        if find_image(docker_client, name) is None:
            _unavailable(f"the image {name} is missing (make it: meshlab image base; meshlab image build)")
    return TOOLBOX_IMAGE


@pytest.fixture
def host_ports():
    """Held while a test publishes the labs' fixed ports on the host's 127.0.0.1: one such
    test at a time on this machine, whichever worker (or pytest run) it is in."""
    with open(Path(tempfile.gettempdir()) / "meshlab-docker-host-ports.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
