"""Labs with pods of their own (07, 11) on Docker: refused by the docker runtime, no
flattened Compose sandbox, and taken in the toolbox container with the kernel's
capabilities (compose/compose.yaml's `meshlab-kernel` service), against a real engine."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import pytest
import yaml

from conftest import ROOT
from docker_support import docker_client, toolbox  # noqa: F401 - fixtures
from test_docker_compose import compose_command

POD_LABS = [7, 11]


@pytest.mark.parametrize("number", POD_LABS)
def test_the_docker_runtime_refuses_a_lab_with_pods_and_says_how_instead(number, cli):
    # Refused before anything is asked of the machine or the engine (this runs without Docker).
    for command in (("check", str(number), "--solution", "--runtime", "docker"),
                    ("start", str(number), "--runtime", "docker")):
        result = cli(*command)
        assert result.code == 2, result.output
        assert "has pods of its own" in result.output
        assert f"run --rm meshlab-kernel check {number}" in " ".join(result.output.split())
    result = cli("check", str(number), "--solution", "--json", env={"MESHLAB_RUNTIME": "docker"})
    assert result.code == 2 and json.loads(result.output)["error"]["kind"] == "environment"


def test_labs_without_pods_still_get_the_docker_runtime(course):
    from meshlab.runtime.interface import runtime_class

    assert runtime_class("docker", lab=course.find(1)).name == "docker"
    assert runtime_class("local", lab=course.find(7)).__name__ == "LocalRuntime"


@pytest.mark.parametrize("number", POD_LABS)
def test_a_lab_with_pods_gets_a_readme_in_place_of_a_sandbox(number, course):
    from meshlab.container.compose import README, expected, path_for

    lab = course.find(number)
    files = expected(course, lab)
    readme = path_for(course, lab).parent / README
    assert files[path_for(course, lab)] is None
    text = files[readme]
    assert all(f"`{pod.name}`: {pod.address}" in text for pod in lab.pods)
    assert f"docker compose -f compose/compose.yaml run --rm meshlab-kernel check {number}" in text
    # committed as rendered (the freshness test covers every lab; this names the file)
    assert readme.read_text() == text and not path_for(course, lab).exists()


def test_a_leftover_sandbox_of_a_lab_with_pods_is_stale_and_removed(course, tmp_path):
    from meshlab.container.compose import README, path_for, stale, write_all

    moved = replace(course, root=tmp_path, labs=(course.find(7),))
    assert stale(moved) == [tmp_path / "compose" / "07-interception" / README]
    flattened = path_for(moved, moved.labs[0])
    flattened.parent.mkdir(parents=True)
    flattened.write_text("services: {pod: {image: meshlab}}\n")
    assert set(stale(moved)) == {flattened, flattened.parent / README}
    assert set(write_all(moved)) == {flattened, flattened.parent / README}
    assert stale(moved) == [] and not flattened.exists()


def test_a_lab_that_gains_pods_loses_its_sandbox(course, tmp_path):
    from meshlab.container.compose import README, expected, path_for

    lab = course.find(1)
    with_pods = replace(lab, pods=course.find(7).pods[:1])
    assert set(expected(course, with_pods)) == {path_for(course, lab), path_for(course, lab).parent / README}
    assert expected(course, with_pods)[path_for(course, lab)] is None


def test_the_kernel_service_is_the_toolbox_with_the_capabilities():
    from meshlab.container.engine import TOOLBOX_IMAGE

    services = yaml.safe_load((ROOT / "compose" / "compose.yaml").read_text())["services"]
    kernel = services["meshlab-kernel"]
    assert kernel["image"] == services["meshlab"]["image"] == TOOLBOX_IMAGE
    assert set(kernel["cap_add"]) == {"NET_ADMIN", "SYS_ADMIN", "DAC_READ_SEARCH"}
    assert kernel["volumes"] == services["meshlab"]["volumes"]


@pytest.mark.lab_runs
@pytest.mark.parametrize("number", POD_LABS)
def test_a_learner_checks_a_lab_with_pods_in_the_kernel_toolbox(number, toolbox, docker_client):
    # What compose/NN-slug/README.md and the README's Docker section tell a learner to type,
    # grading the solution; the state goes to the container's /tmp (the checkout stays as it
    # was). The pods are made inside the container: nothing of them outlives it.
    compose = [*compose_command(), "-p", f"meshlab-test-kernel-{number}", "-f", str(ROOT / "compose" / "compose.yaml")]
    try:
        proc = subprocess.run([*compose, "run", "--rm", "-e", "MESHLAB_STATE_DIR=/tmp/meshlab", "meshlab-kernel",
                               "check", str(number), "--solution", "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run([*compose, "down"], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    failed = [c for c in result["checks"] if c["status"] != "pass"]
    assert result["status"] == "pass" and not failed, json.dumps(failed, indent=2)[:4000]
    assert len(result["checks"]) >= 9
    selector = {"label": [f"com.docker.compose.project=meshlab-test-kernel-{number}"]}
    assert docker_client.api.containers(all=True, filters=selector) == []
    assert docker_client.api.networks(filters=selector) == []


def test_the_toolbox_compose_file_is_valid_compose():
    proc = subprocess.run([*compose_command(), "-f", str(ROOT / "compose" / "compose.yaml"), "config", "-q"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
