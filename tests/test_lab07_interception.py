"""Lab 07 graded for real, in pods on the real kernel: the starter fails, the solution
passes, capture rules and Envoy configs that only look right fail the check they
should, an unusual correct answer passes, and nothing the lab creates in the kernel
(namespaces, links, rules, cgroups) outlives a check that passed, failed, was
interrupted with Ctrl-C or was killed outright."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT
from lab_variants import fails_only, passes

from meshlab.grading import eventually
from meshlab import platform
from meshlab.runtime.pods import NETNS_DIR, cgroup2_root

pytestmark = [
    pytest.mark.lab_runs,
    pytest.mark.skipif(not (platform.FEATURES["netns"].probe()[0] and platform.FEATURES["iptables"].probe()[0]),
                       reason="lab 07 needs root, network namespaces and iptables"),
]

SOLUTION = ROOT / "solutions" / "07-interception"
RULES = (SOLUTION / "capture.rules").read_text()
ENVOY = (SOLUTION / "envoy.yaml").read_text()
CONNECT4 = (SOLUTION / "connect4.c").read_text()
CHECKS = {"test_outbound_captured", "test_each_call_reaches_its_destination", "test_inbound_through_envoy",
          "test_no_loop", "test_loopback_bypasses", "test_excluded_port_bypasses",
          "test_bpf_outbound_captured", "test_bpf_only_the_cgroup", "test_bpf_no_loop"}


def rules(old: str, new: str) -> dict[str, str]:
    assert old in RULES, old
    return {"capture.rules": RULES.replace(old, new)}


def envoy(old: str, new: str) -> dict[str, str]:
    assert old in ENVOY, old
    return {"envoy.yaml": ENVOY.replace(old, new)}


def connect4(old: str, new: str) -> dict[str, str]:
    assert old in CONNECT4, old
    return {"connect4.c": CONNECT4.replace(old, new)}


def test_starter_fails_every_check_and_leaves_nothing(state_dir, lab_copy, course):
    code, data = _graded_and_gone(state_dir, lab_copy(7, base="starter"), course)
    checks = {c["id"]: c for c in data["checks"]}
    assert code == 1 and set(checks) == CHECKS, data
    for cid, check in checks.items():
        assert check["status"] == "fail" and check["expected"] and check["received"] and check["hint"], check
    assert "reached the remote service directly" in checks["test_outbound_captured"]["message"]
    assert "Envoy was not in the path" in checks["test_bpf_outbound_captured"]["message"]


def test_solution_passes_and_leaves_nothing(state_dir, lab_copy, course):
    code, data = _graded_and_gone(state_dir, lab_copy(7), course)
    assert code == 0 and all(c["status"] == "pass" for c in data["checks"]) and len(data["checks"]) == 9, data


def _graded_and_gone(state_dir: Path, folder: Path, course) -> tuple[int, dict]:
    """Grade FOLDER, watching the run's kernel objects: they exist while it runs and are
    all gone once the check has finished (passed or failed)."""
    proc = _check_in_background(state_dir, folder)
    tag, _, programs = _while_running(state_dir, proc, course)
    out, err = proc.communicate(timeout=300)
    assert _lab_kernel_objects(tag) == []
    assert _bpf_objects(programs) == set()
    return proc.returncode, json.loads(out) if out.strip() else {"stderr": err}


# -- plausible but wrong ------------------------------------------------------------

def test_no_owner_exemption_loops(grade):
    checks = fails_only(grade, 7, rules("-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN\n", ""),
                        {"test_outbound_captured", "test_each_call_reaches_its_destination", "test_no_loop",
                         "test_loopback_bypasses", "test_excluded_port_bypasses"})
    assert "came back to it" in checks["test_no_loop"]["message"]
    # the first checks name the loop too, not a capture that is missing
    assert "never came back" in checks["test_outbound_captured"]["message"]


def test_loopback_redirected_too(grade):
    checks = fails_only(grade, 7, rules("-A MESH_OUTPUT -d 127.0.0.0/8 -j RETURN\n", ""),
                        {"test_loopback_bypasses"})
    assert "127.0.0.1 inside the pod was captured" in checks["test_loopback_bypasses"]["message"]


def test_a_static_cluster_with_loopback_captured_says_the_checker_cannot_read_envoy(grade):
    # A learner at step 3 (no loopback exemption yet) with the wrong cluster: the checker's
    # own request to Envoy's admin API is captured and answered by the remote service.
    files = {**rules("-A MESH_OUTPUT -d 127.0.0.0/8 -j RETURN\n", ""), **envoy("""    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
""", """    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: original_destination
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.77.7.3, port_value: 8080 } } }
""")}
    code, checks, data = grade(7, files=files)
    assert code == 1, data
    assert "Envoy's admin API" in checks["test_no_loop"]["message"], checks["test_no_loop"]
    assert "-d 127.0.0.0/8" in checks["test_no_loop"]["hint"]


def test_static_cluster_instead_of_original_dst(grade):
    static = envoy("""    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
""", """    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: original_destination
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 10.77.7.3, port_value: 8080 } } }
""")
    # podb's Envoy runs the same envoy.yaml: part B sends every call to one address too.
    checks = fails_only(grade, 7, static, {"test_each_call_reaches_its_destination", "test_bpf_outbound_captured"})
    assert "reached another service" in checks["test_each_call_reaches_its_destination"]["message"]


def test_connect4_redirecting_envoy_too_loops(grade):
    skip_uid = """    if ((bpf_get_current_uid_gid() & 0xffffffff) == ENVOY_UID)
        return 1;
"""
    checks = fails_only(grade, 7, connect4(skip_uid, ""),
                        {"test_bpf_outbound_captured", "test_bpf_only_the_cgroup", "test_bpf_no_loop"})
    assert "redirected to it" in checks["test_bpf_no_loop"]["message"]
    assert "never came back" in checks["test_bpf_outbound_captured"]["message"]


def test_connect4_that_does_not_compile_is_an_input_error_with_its_line(grade):
    code, checks, data = grade(7, files=connect4("ctx->user_port = bpf_htons(OUTBOUND_PORT);",
                                                 "ctx->user_port = bpf_htons(OUTBOUND_PORT)"))
    assert code == 2 and not checks, data
    assert "connect4.c:23:" in data["error"]["details"] and "error:" in data["error"]["details"], data["error"]


def test_unusual_but_correct(grade):
    """Exempt Envoy by its group instead of its uid, loopback by interface, and bind the
    outbound listener to every address of the pod: all equally right."""
    files = rules("-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN\n-A MESH_OUTPUT -d 127.0.0.0/8 -j RETURN\n",
                  "-A MESH_OUTPUT -o lo -j RETURN\n-A MESH_OUTPUT -m owner --gid-owner 1337 -j RETURN\n")
    files.update(envoy("address: 127.0.0.1, port_value: 15001", "address: 0.0.0.0, port_value: 15001"))
    passes(grade, 7, files)


def test_rules_iptables_refuses_are_an_input_error_with_their_line(grade):
    code, checks, data = grade(7, files=rules("-j REDIRECT --to-ports 15001", "-j REDIRECT --to-port 15001x"))
    assert code == 2 and not checks, data
    assert "capture.rules" in data["error"]["where"] and data["error"]["where"].endswith(":22"), data["error"]
    assert "iptables refused" in data["message"]


# -- nothing outlives the lab -------------------------------------------------------

def _lab_kernel_objects(tag: str) -> list[str]:
    """What of run TAG is still in the kernel: namespaces, cgroups, links in them."""
    left = [f"netns {p.name}" for p in NETNS_DIR.glob(f"ml{tag}-*")] if NETNS_DIR.is_dir() else []
    root = cgroup2_root()
    if root is not None and (root / f"meshlab-{tag}").exists():
        left.append(f"cgroup meshlab-{tag}")
    return left


def _bpf_objects(programs: set[int]) -> set[str]:
    """Which of the run's BPF PROGRAMS, and of the maps they use, the kernel still holds;
    and anything of the lab pinned in /sys/fs/bpf."""
    def listed(kind: str) -> list[dict]:
        return json.loads(subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True).stdout)
    maps = {map_id for program in listed("prog") if program["id"] in programs for map_id in program.get("map_ids", [])}
    maps |= _MAPS_SEEN.get(frozenset(programs), set())
    left = {f"prog {i}" for i in programs & {p["id"] for p in listed("prog")}}
    left |= {f"map {i}" for i in maps & {m["id"] for m in listed("map")}}
    pinned = Path("/sys/fs/bpf")
    left |= {f"pinned {p.name}" for p in pinned.glob("mesh*")} if pinned.is_dir() else set()
    return left


_MAPS_SEEN: dict[frozenset, set[int]] = {}   # the maps of a run's programs, seen while it ran


def _attached(cgroup: str) -> set[int]:
    proc = subprocess.run(["bpftool", "-j", "cgroup", "show", cgroup], capture_output=True, text=True)
    return {program["id"] for program in json.loads(proc.stdout.strip() or "[]")} if proc.returncode == 0 else set()


def _run_state(state_dir: Path) -> dict:
    for state in state_dir.glob("runs/*/state.json"):
        try:
            return json.loads(state.read_text())
        except (OSError, ValueError):
            continue
    return {}


def _check_in_background(state_dir: Path, folder: Path) -> subprocess.Popen:
    env = {**os.environ, "MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": str(state_dir)}
    return subprocess.Popen([sys.executable, "-m", "meshlab", "check", "7", "--path", str(folder), "--json",
                             "--isolate"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _while_running(state_dir: Path, proc: subprocess.Popen, course) -> tuple[str, dict, set[int]]:
    """Once every service of the run is up: its tag, its services, its BPF programs."""
    every = len(course.find(7).services)
    assert eventually(lambda: len(_run_state(state_dir).get("services", {})) == every or proc.poll() is not None,
                      timeout=120)
    state = _run_state(state_dir)
    assert state.get("pods"), proc.communicate()
    tag, cgroups = state["pods"]["tag"], state["pods"]["cgroups"]
    programs: set[int] = set()
    assert eventually(lambda: len(programs.update(_attached(cgroups["mesh"])) or programs) >= 3, timeout=30)
    shown = json.loads(subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True).stdout)
    _MAPS_SEEN[frozenset(programs)] = {m for p in shown if p["id"] in programs for m in p.get("map_ids", [])}
    assert len(_MAPS_SEEN[frozenset(programs)]) >= 2, shown
    assert _lab_kernel_objects(tag), "the run's pods should exist while it runs"
    return tag, state["services"], programs


def test_nothing_left_after_ctrl_c(state_dir, lab_copy, course):
    proc = _check_in_background(state_dir, lab_copy(7))
    tag, _, programs = _while_running(state_dir, proc, course)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert _lab_kernel_objects(tag) == []
    assert eventually(lambda: _bpf_objects(programs) == set(), timeout=5), _bpf_objects(programs)


def test_nothing_left_after_the_checker_is_killed(state_dir, lab_copy, course):
    proc = _check_in_background(state_dir, lab_copy(7))
    tag, services, programs = _while_running(state_dir, proc, course)
    checker = next(p for p in psutil.Process(proc.pid).children(recursive=True)
                   if "pytest" in " ".join(p.cmdline()))
    checker.kill()  # SIGKILL: no finally block runs; the reaper must clean up
    proc.communicate(timeout=60)
    assert eventually(lambda: _lab_kernel_objects(tag) == [], timeout=20), _lab_kernel_objects(tag)
    # and no process of the run is left (Envoy as uid 1337 included), nor its BPF programs
    assert eventually(lambda: not [s["name"] for s in services.values() if psutil.pid_exists(s["pid"])], timeout=10)
    assert eventually(lambda: _bpf_objects(programs) == set(), timeout=5), _bpf_objects(programs)


# -- where the machine does not allow it ---------------------------------------------

WITHOUT_PRIVILEGES = ["setpriv", "--bounding-set=-net_admin,-sys_admin,-bpf,-perfmon", "--"]


def _meshlab_without_privileges(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": str(state_dir), "COLUMNS": "200"}
    return subprocess.run([*WITHOUT_PRIVILEGES, sys.executable, "-m", "meshlab", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_without_the_privileges_check_exits_2_and_says_what_to_do(state_dir):
    result = _meshlab_without_privileges(state_dir, "check", "7", "--json")
    assert result.returncode == 2, result.stdout + result.stderr
    error = json.loads(result.stdout)["error"]
    assert "missing CAP_NET_ADMIN and CAP_SYS_ADMIN" in error["message"]
    assert "as root" in error["fix"] and "--cap-add NET_ADMIN" in error["fix"] and "VM" in error["fix"]


def test_without_the_privileges_audit_skips_the_lab_with_the_reason(state_dir):
    result = _meshlab_without_privileges(state_dir, "audit", "7", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = json.loads(result.stdout)
    assert row["ok"] and not row["problems"] and "missing CAP_NET_ADMIN" in row["skipped"]
    assert row["starter"]["status"] == row["solution"]["status"] == "skip"
    table = _meshlab_without_privileges(state_dir, "audit", "7")
    assert "skipped: lab 07 needs" in table.stdout


# -- the compile step -------------------------------------------------------------------

def test_an_unchanged_program_is_not_compiled_again(tmp_path: Path, monkeypatch):
    """Every check runs `bpf/loader.py compile`: a program whose source and headers did
    not change comes from the cache, also in another copy of the lab (a graded
    solution); a changed header or source compiles what includes it."""
    import shutil

    real_clang = shutil.which("clang")
    if real_clang is None:
        pytest.skip("clang is not installed")
    tools, calls = tmp_path / "tools", tmp_path / "clang-calls"
    tools.mkdir()
    (tools / "clang").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {real_clang} "$@"\n')
    (tools / "clang").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # no shared cache: a real first build

    def compile_in(lab: Path) -> tuple[int, dict[str, bytes]]:
        before = len(calls.read_text().splitlines()) if calls.exists() else 0
        done = subprocess.run([sys.executable, "bpf/loader.py", "compile"], cwd=lab, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        ran = len(calls.read_text().splitlines()) - before if calls.exists() else 0
        return ran, {o.name: o.read_bytes() for o in (lab / "bpf" / "build").glob("*.o")}

    first, second = tmp_path / "lab", tmp_path / "copy"
    for lab in (first, second):
        shutil.copytree(ROOT / "labs" / "07-interception", lab, ignore=shutil.ignore_patterns("build"))
    ran, objects = compile_in(first)
    assert ran == 3 and sorted(objects) == ["connect4.o", "getsockopt.o", "sockops.o"]
    assert all(data[:4] == b"\x7fELF" for data in objects.values())
    assert compile_in(first) == (0, objects)
    assert compile_in(second)[0] == 0 and compile_in(second)[1].keys() == objects.keys()
    (second / "connect4.c").write_text((second / "connect4.c").read_text() + "\n/* changed */\n")
    assert compile_in(second)[0] == 1
    (second / "bpf" / "mesh.h").write_text((second / "bpf" / "mesh.h").read_text() + "\n/* changed */\n")
    assert compile_in(second)[0] == 3
