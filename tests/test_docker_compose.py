"""compose/: the toolbox service a learner runs the course with, through a real Compose."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from meshlab.grading import eventually

from conftest import ROOT
from docker_support import docker_client, host_ports, toolbox  # noqa: F401 - fixtures


def compose_command() -> list[str]:
    """`docker compose` (v2) where the plugin exists, else docker-compose (v1, Debian's)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.skip("neither `docker compose` nor docker-compose is installed")


@pytest.mark.lab_runs
@pytest.mark.xdist_group("host-ports")
def test_a_learner_checks_lab_01_with_compose_run(toolbox, tmp_path):
    # What the README's Docker section tells a learner to type, grading the solution; the
    # state goes to the container's /tmp so that the test leaves the checkout as it was.
    # `run --rm` leaves the project's network: `down` removes it.
    compose = [*compose_command(), "-p", "meshlab-test-toolbox", "-f", str(ROOT / "compose" / "compose.yaml")]
    try:
        proc = subprocess.run([*compose, "run", "--rm", "-e", "MESHLAB_STATE_DIR=/tmp/meshlab",
                               "meshlab", "check", "1", "--solution", "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run([*compose, "down"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    # (lab 01's Docker part is skipped there: the toolbox runs the local runtime)
    assert result["status"] == "pass" and all(c["status"] in ("pass", "skip") for c in result["checks"])
    assert sum(c["status"] == "pass" for c in result["checks"]) >= 7


def test_every_lab_has_a_fresh_compose_sandbox(course):
    from meshlab.container.compose import stale

    assert stale(course) == [], "run `meshlab compose` and commit compose/"


def test_a_changed_manifest_makes_its_sandbox_stale(course, tmp_path):
    from dataclasses import replace

    from meshlab.container.compose import render

    lab = course.find(1)
    moved = replace(lab, services=tuple(replace(s, args=("--port", "8090")) if s.name == "app" else s
                                        for s in lab.services))
    assert render(course, moved) != render(course, lab)


def test_meshlab_compose_check_reports_fresh_files(cli):
    result = cli("compose", "--check")
    assert result.code == 0 and "fresh" in result.output


@pytest.mark.parametrize("number", [1, 2, 3, 4, 5, 6])
def test_every_sandbox_is_valid_compose(number, course):
    from meshlab.container.compose import path_for

    command = compose_command()
    path = path_for(course, course.find(number))
    proc = subprocess.run([*command, "-f", str(path), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_toolbox_service_uses_this_versions_image():
    import yaml

    from meshlab.container.engine import TOOLBOX_IMAGE

    service = yaml.safe_load((ROOT / "compose" / "compose.yaml").read_text())["services"]["meshlab"]
    assert service["image"] == TOOLBOX_IMAGE, "compose/compose.yaml names another version's image"
    context = (ROOT / "compose" / service["build"]["context"]).resolve()
    assert context == ROOT and (context / service["build"]["dockerfile"]).is_file()


@pytest.mark.lab_runs
def test_lab_01s_sandbox_answers_on_the_hosts_loopback(toolbox, host_ports, docker_client, course):
    # `up -d`, then what the lab README's curl commands reach from the host: the app on
    # :8080 and Envoy's admin on :9901, both listening on the pod's 127.0.0.1.
    import httpx

    from meshlab.container.compose import path_for

    compose = [*compose_command(), "-p", "meshlab-test-sandbox", "-f", str(path_for(course, course.find(1)))]
    subprocess.run([*compose, "up", "-d"], check=True, capture_output=True, timeout=120)
    try:
        def answers(url: str) -> str:
            try:
                return httpx.get(url, timeout=2, trust_env=False).text.strip()
            except httpx.HTTPError:
                return ""

        assert eventually(lambda: answers("http://127.0.0.1:9901/ready") == "LIVE", timeout=30)
        assert "hello" in answers("http://127.0.0.1:8080/").lower()
    finally:
        subprocess.run([*compose, "down"], capture_output=True, timeout=120)
    selector = {"label": ["com.docker.compose.project=meshlab-test-sandbox"]}
    assert docker_client.api.containers(all=True, filters=selector) == []
    assert docker_client.api.networks(filters=selector) == []


@pytest.mark.lab_runs
@pytest.mark.xdist_group("host-ports")
@pytest.mark.parametrize("number", [2, 3])
def test_check_grades_the_sandbox_the_learner_started(number, toolbox, host_ports, docker_client, course, meshlab,
                                                      lab_copy, tmp_path):
    # The learner's `docker compose -f compose/NN-slug/compose.yaml up -d`, here beside a
    # solved copy of the lab (the file mounts ../../labs/NN-slug), then `meshlab check N
    # --runtime docker`: the checks run against those containers (lab 03's read Envoy's
    # access log, which the runtime follows into the run folder), and leave them running.
    from meshlab.container.compose import render
    from meshlab.container.engine import LABEL

    lab = course.find(number)
    folder = lab_copy(number, base="solution", name=f"labs/{lab.slug}")
    compose_file = tmp_path / "compose" / lab.slug / "compose.yaml"
    compose_file.parent.mkdir(parents=True)
    compose_file.write_text(render(course, lab))
    compose = [*compose_command(), "-p", "meshlab-test-attach", "-f", str(compose_file)]
    subprocess.run([*compose, "up", "-d"], check=True, capture_output=True, timeout=120)
    selector = {"label": ["com.docker.compose.project=meshlab-test-attach"]}
    try:
        before = {c["Id"] for c in docker_client.api.containers(filters=selector)}
        result = meshlab("check", str(number), "--path", str(folder), "--runtime", "docker", "--json")
        failed = [c for c in result.json()["checks"] if c["status"] != "pass"]
        assert result.code == 0 and not failed, json.dumps(failed or result.json(), indent=2)[:4000]
        # It graded the sandbox: no run of its own, the sandbox's containers still up.
        assert docker_client.api.containers(all=True, filters={"label": [LABEL]}) == []
        assert {c["Id"] for c in docker_client.api.containers(filters=selector)} == before
    finally:
        subprocess.run([*compose, "down", "--timeout", "2"], capture_output=True, timeout=120)
    assert docker_client.api.containers(all=True, filters=selector) == []
