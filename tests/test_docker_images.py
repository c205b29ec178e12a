"""The toolbox image runs the course: a check inside the container passes lab 01's
solution, against the Envoy inside the image; and a machine without Docker gets exit 2
with what to do, never a traceback."""

from __future__ import annotations

import json

import pytest

from docker_support import docker_client, toolbox  # noqa: F401 - fixtures
from meshlab.container.engine import require_image
from meshlab.errors import MeshlabError

ROOT_IN_IMAGE = "/course"


def test_no_engine_is_exit_2_with_the_fix(cli, tmp_path):
    result = cli("image", "status", env={"DOCKER_HOST": f"unix://{tmp_path}/docker.sock"})
    assert result.code == 2
    assert "no Docker engine" in result.output and "docker.sock does not exist" in result.output
    assert "install Docker" in result.output


def test_a_daemon_that_does_not_answer_is_exit_2(cli, tmp_path):
    # A socket file nobody listens on: the engine "is installed but not running".
    import socket

    path = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    result = cli("image", "status", env={"DOCKER_HOST": f"unix://{path}"})
    assert result.code == 2
    assert "does not answer" in result.output and "dockerd" in result.output


def test_a_missing_image_says_how_to_make_it(docker_client):
    with pytest.raises(MeshlabError) as raised:
        require_image(docker_client, "meshlab:0.0.0-never-built")
    assert "does not exist" in raised.value.message and "meshlab image build" in raised.value.fix


def test_image_status_lists_the_engine_and_images(cli, toolbox):
    result = cli("image", "status", "--json")
    assert result.code == 0, result.output
    info = json.loads(result.stdout)
    assert info["api_version"] >= "1.41"
    assert info["images"][toolbox]


@pytest.mark.lab_runs
def test_a_check_inside_the_toolbox_container_passes_lab_01s_solution(docker_client, toolbox, course):
    # As the README's Docker section does it: the checkout mounted, meshlab from the image.
    # The state (runs, graded copies) goes to the container's /tmp, not into the checkout.
    container = docker_client.containers.run(
        toolbox, ["check", "1", "--solution", "--json"], init=True, detach=True,
        volumes={str(course.root): {"bind": ROOT_IN_IMAGE, "mode": "ro"}},
        environment={"MESHLAB_STATE_DIR": "/tmp/meshlab"})
    try:
        code = container.wait(timeout=240)["StatusCode"]
        output = container.logs(stdout=True, stderr=False).decode()
        errors = container.logs(stdout=False, stderr=True).decode()
    finally:
        container.remove(force=True)
    assert code == 0, output[-3000:] + errors[-3000:]
    result = json.loads(output)
    assert result["status"] == "pass" and len(result["checks"]) >= 5
    # Lab 01's Docker part is skipped there: inside the toolbox the checks run on local processes.
    assert all(check["status"] in ("pass", "skip") for check in result["checks"])
    assert sum(check["status"] == "pass" for check in result["checks"]) >= 7


def test_doctor_reports_the_engine_and_the_images(cli, toolbox):
    findings = {(f["group"], f["name"]): f for f in json.loads(cli("doctor", "--json").stdout)["findings"]}
    assert findings[("docker", "engine")]["status"] == "ok"
    assert "API 1." in findings[("docker", "engine")]["detail"]
    # "warn" when the image was built from other sources than this checkout (see below).
    assert findings[("docker", toolbox)]["status"] in ("ok", "warn")


def test_an_image_built_from_other_sources_is_stale(docker_client, toolbox, course, tmp_path):
    import shutil

    from meshlab.container.images import image_is_stale, source_fingerprint

    changed = tmp_path / "checkout"
    shutil.copytree(course.root / "src", changed / "src")
    shutil.copy(course.root / "pyproject.toml", changed)
    assert source_fingerprint(changed) == source_fingerprint(course.root)
    (changed / "src" / "meshlab" / "apps" / "hello.py").write_text("# another app\n")
    assert source_fingerprint(changed) != source_fingerprint(course.root)
    assert image_is_stale(docker_client, changed) is True


def test_doctor_without_an_engine_calls_it_optional(cli, tmp_path):
    findings = {(f["group"], f["name"]): f for f in json.loads(
        cli("doctor", "--json", env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}).stdout)["findings"]}
    assert findings[("docker", "engine")]["status"] == "absent"
    assert findings[("docker", "engine")]["fix"]
