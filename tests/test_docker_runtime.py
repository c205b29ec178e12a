"""Labs graded on the Docker runtime (`--runtime docker`): one container per service in
one shared network namespace. The same checks as on local processes: starters fail,
solutions pass; and nothing is left behind, after a pass, a Ctrl-C or a killed checker.

These runs publish the labs' fixed ports on the host's 127.0.0.1 (a private network
namespace cannot reach them), so they run one at a time (the `host_ports` lock).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from docker_support import docker_client, host_ports, toolbox  # noqa: F401 - fixtures
from lab_variants import fails_only, passes
from meshlab.grading import eventually
from meshlab.container.engine import LABEL

pytestmark = [pytest.mark.lab_runs, pytest.mark.xdist_group("host-ports")]


def ours(client) -> tuple[list, list]:
    """Every container and network a meshlab run made, on the whole engine (as the
    engine's list gives them: dicts with Id, Labels, State)."""
    selector = {"label": [LABEL]}
    return client.api.containers(all=True, filters=selector), client.api.networks(filters=selector)


@pytest.fixture
def clean_engine(host_ports, docker_client, toolbox):
    leftovers = ours(docker_client)
    assert leftovers == ([], []), f"containers or networks of another run are there: {leftovers}"
    yield docker_client
    containers, networks = ours(docker_client)
    for container in containers:
        docker_client.api.remove_container(container["Id"], force=True)
    for network in networks:
        docker_client.api.remove_network(network["Id"])
    assert (containers, networks) == ([], []), "a run left containers or networks behind"


def grade_in_docker(meshlab, folder, number: int) -> tuple[int, dict]:
    result = meshlab("check", str(number), "--path", str(folder), "--runtime", "docker", "--json")
    assert result.code in (0, 1), result.output
    return result.code, result.json()


# Labs 01-04 both ways: each starter fails and each solution passes in containers. The
# checker joins the pod's network namespace, so lab 04's impostor server (a check that
# serves on 127.0.0.1 for a sidecar to reach) works as it does on local processes.
@pytest.mark.parametrize("number", [1, 2, 3, 4])
def test_starter_fails_and_solution_passes_in_docker(number, meshlab, lab_copy, clean_engine):
    code, data = grade_in_docker(meshlab, lab_copy(number, base="starter", name="starter"), number)
    assert code == 1 and data["status"] == "fail", json.dumps(data, indent=2)[:4000]
    assert any(c["status"] == "fail" for c in data["checks"])
    assert ours(clean_engine) == ([], [])
    code, data = grade_in_docker(meshlab, lab_copy(number, base="solution"), number)
    failed = [c for c in data["checks"] if c["status"] != "pass"]
    assert code == 0 and not failed, json.dumps(failed, indent=2)[:4000]
    assert ours(clean_engine) == ([], [])


# Labs 05 and 06's solutions, unchanged, on containers (their starters fail on local
# processes already; a starter fails the same way in a container, as labs 01-04 show).
@pytest.mark.parametrize("number", [5, 6])
def test_solution_passes_in_docker(number, meshlab, lab_copy, clean_engine):
    code, data = grade_in_docker(meshlab, lab_copy(number, base="solution"), number)
    failed = [c for c in data["checks"] if c["status"] != "pass"]
    assert code == 0 and not failed, json.dumps(failed, indent=2)[:4000]
    assert ours(clean_engine) == ([], [])


def _start_check(state_dir, folder) -> subprocess.Popen:
    env = {**os.environ, "MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": str(state_dir)}
    return subprocess.Popen([sys.executable, "-m", "meshlab", "check", "1", "--path", str(folder),
                             "--runtime", "docker", "--json"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _services_up(client, count: int) -> bool:
    running = [c for c in ours(client)[0] if c["State"] == "running"]
    return len(running) >= count


def test_ctrl_c_removes_every_container_and_network(state_dir, lab_copy, clean_engine):
    cli = _start_check(state_dir, lab_copy(1))
    try:
        assert eventually(lambda: _services_up(clean_engine, 3), timeout=60), "the lab's containers never ran"
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=60) == 130
    finally:
        cli.kill()
        cli.communicate()
    assert ours(clean_engine) == ([], [])


def test_the_next_command_removes_what_a_killed_checker_left(meshlab, state_dir, lab_copy, clean_engine):
    cli = _start_check(state_dir, lab_copy(1))
    try:
        assert eventually(lambda: _services_up(clean_engine, 3), timeout=60), "the lab's containers never ran"
        # The checker (the pytest child owning the run) dies without any chance to clean up.
        _, owner_pid, _ = json.loads(ours(clean_engine)[0][0]["Labels"][f"{LABEL}.owner"])
        os.kill(owner_pid, signal.SIGKILL)
        cli.wait(timeout=60)
    finally:
        cli.kill()
        cli.communicate()
    assert ours(clean_engine)[0], "the containers should outlive a checker killed with SIGKILL"
    result = meshlab("list")
    assert result.code == 0, result.output
    assert "whose owner had died" in result.stderr
    assert ours(clean_engine) == ([], [])


def test_a_port_published_by_another_container_is_exit_2(meshlab, lab_copy, clean_engine, toolbox):
    blocker = clean_engine.containers.run(toolbox, ["-c", "sleep 60"], entrypoint=["sh"], detach=True,
                                          ports={"10000/tcp": ("127.0.0.1", 10000)}, name="meshlab-test-blocker")
    try:
        result = meshlab("check", "1", "--path", str(lab_copy(1)), "--runtime", "docker", "--json")
    finally:
        blocker.remove(force=True)
    assert result.code == 2, result.output
    message = json.dumps(result.json())
    assert "10000" in message and "meshlab-test-blocker" in message and "docker rm -f" in message
    assert ours(clean_engine) == ([], [])


def test_isolate_and_docker_exclude_each_other(cli):
    result = cli("check", "1", "--runtime", "docker", "--isolate")
    assert result.code == 2 and "exclude each other" in result.output


def test_start_check_attaches_and_stop_removes_everything(meshlab, clean_engine):
    started = meshlab("start", "1", "--runtime", "docker")
    try:
        assert started.code == 0, started.output
        assert "container meshlab-01-" in started.stdout and "--runtime docker" in started.stdout
        # The app answers on the host's 127.0.0.1 through the pod's published port.
        import httpx

        assert httpx.get("http://127.0.0.1:8080/", trust_env=False, timeout=5).status_code == 200
        status = meshlab("status", "1")
        assert status.code == 0 and "container meshlab-01-" in status.stdout, status.output
        listed = {row["slug"]: row for row in meshlab("list", "--json").json()}
        assert listed["01-hello-mesh"]["running"] and not listed["02-canary"]["running"]
        checked = meshlab("check", "1", "--runtime", "docker", "--json")
        assert checked.code == 1, checked.output  # the starter, graded on the running sandbox
        assert len([c for c in ours(clean_engine)[0] if c["State"] == "running"]) == 3, \
            "a check must leave a run it attached to running"
    finally:
        stopped = meshlab("stop", "1")
    assert stopped.code == 0 and "sidecar" in stopped.stdout and "app" in stopped.stdout
    assert ours(clean_engine) == ([], [])


# -- lab 01's Docker part: the learner's own compose files --------------------------

SOLVED = ROOT / "solutions" / "01-hello-mesh" / "docker"


@pytest.fixture
def grade_docker(meshlab, lab_copy, clean_engine):
    """`grade` of conftest, on the Docker runtime (for lab_variants' fails_only / passes)."""
    def run(number: int, *, base: str = "solution", files: dict[str, str] | None = None, path=None):
        folder = path or lab_copy(number, base=base, files=files)
        result = meshlab("check", str(number), "--path", str(folder), "--runtime", "docker", "--json")
        assert result.code in (0, 1, 2), result.output
        data = result.json()
        return result.code, {c["id"]: c for c in data["checks"]}, data
    yield run
    assert ours(clean_engine) == ([], [])
    assert not clean_engine.containers.list(all=True, filters={"label": "com.docker.compose.project"}), \
        "a check left a Compose project's containers behind"


def test_a_static_cluster_naming_the_service_fails_only_step_7(grade_docker):
    # STATIC takes IP addresses only: Envoy refuses `app` and its container exits.
    text = (SOLVED / "network" / "envoy.yaml").read_text().replace("type: STRICT_DNS", "type: STATIC")
    checks = fails_only(grade_docker, 1, {"docker/network/envoy.yaml": text}, {"test_docker_network"})
    assert "not running" in checks["test_docker_network"]["message"]


def test_the_local_config_in_a_container_of_its_own_fails_only_step_7(grade_docker):
    # Listening on 0.0.0.0 but still sending to 127.0.0.1:8080: Envoy's own loopback.
    text = (SOLVED / "sidecar" / "envoy.yaml").read_text()
    checks = fails_only(grade_docker, 1, {"docker/network/envoy.yaml": text}, {"test_docker_network"})
    assert "its own container's loopback" in checks["test_docker_network"]["message"]
    assert "127.0.0.1:8080" in checks["test_docker_network"]["received"]


def test_logical_dns_passes_too(grade_docker):
    text = (SOLVED / "network" / "envoy.yaml").read_text().replace("type: STRICT_DNS", "type: LOGICAL_DNS")
    passes(grade_docker, 1, {"docker/network/envoy.yaml": text})


def test_a_sidecar_that_still_publishes_the_apps_port_fails_only_the_ports_check(grade_docker):
    text = (SOLVED / "sidecar" / "compose.yaml").read_text().replace(
        '"127.0.0.1:9901:9901"]', '"127.0.0.1:9901:9901", "127.0.0.1:8080:8080"]')
    assert "8080:8080" in text
    checks = fails_only(grade_docker, 1, {"docker/sidecar/compose.yaml": text}, {"test_docker_sidecar_ports"})
    assert "8080 by app" in checks["test_docker_sidecar_ports"]["received"]


def test_a_sidecar_that_reaches_the_app_by_its_name_fails_only_step_8s_namespace_check(grade_docker):
    # In the app's namespace, `app` resolves to the app's outside address, where an app
    # on 127.0.0.1 does not listen: Envoy must use 127.0.0.1 there.
    text = (SOLVED / "network" / "envoy.yaml").read_text()
    checks = fails_only(grade_docker, 1, {"docker/sidecar/envoy.yaml": text}, {"test_docker_sidecar"})
    assert "127.0.0.1:8080" in checks["test_docker_sidecar"]["expected"]
