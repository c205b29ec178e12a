"""The pieces of meshlab.runtime.pods that need no kernel privileges: names, the
learner-facing error for refused rules, and how a service is entered."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from meshlab.runtime import enter
from meshlab.runtime.pods import PodNetwork, PodRecord, _rules_error, tag_for, teardown


def test_the_workspace_run_has_a_name_to_paste_and_other_folders_a_unique_one():
    assert tag_for(Path("/x/.meshlab/runs/07-interception")) == "07"
    assert tag_for(Path("/x/.meshlab/runs/07-interception@1a2b3c4d")) == "07-1a2b3c4d"


def test_rules_iptables_refuses_point_at_the_line_and_say_how_the_file_is_read(tmp_path):
    stderr = ("iptables-restore v1.8.9 (nf_tables): Garbage after port value: `x'\nError occurred at line: 22\n"
              "Try `iptables-restore -h' or 'iptables-restore --help' for more information.\n")
    error = _rules_error(tmp_path / "capture.rules", stderr)
    assert str(error.where).endswith("capture.rules:22") and error.exit_code == 2
    assert "Garbage after port value" in error.details and "Try `" not in error.details
    assert "iptables-restore" in error.fix and "COMMIT" in error.fix


def test_a_service_as_another_user_keeps_its_parent_death_signal(monkeypatch):
    monkeypatch.setattr(enter, "parent_death_signal", lambda: int(signal.SIGKILL))
    argv = enter.as_user(1337, ["envoy", "-c", "envoy.yaml"])
    assert argv[0].endswith("setpriv") and "--reuid=1337" in argv and "--regid=1337" in argv
    # setuid clears the kernel's parent-death signal: setpriv arms it again
    assert "--pdeathsig=KILL" in argv and argv[-3:] == ["envoy", "-c", "envoy.yaml"]


def test_teardown_of_what_is_already_gone_is_quiet(tmp_path):
    record = PodRecord(tag="99-test", namespaces={"pod": "ml99-test-nothing-here"},
                       cgroups={"mesh": str(tmp_path / "no-such-cgroup")})
    assert teardown(record) == []
    assert teardown(record) == []


def test_a_service_restarting_in_a_pod_starts_without_its_capture_rules_and_gets_them_back(monkeypatch):
    # Its readiness probe goes to 127.0.0.1 inside the pod: rules the learner is still
    # writing (no loopback exemption yet) must not send it into Envoy's outbound port.
    saved = "*filter\n:INPUT DROP [0:0]\nCOMMIT\n*nat\n-A OUTPUT -p tcp -j REDIRECT --to-ports 15001\nCOMMIT\n"
    calls = []

    def run(pod, argv, **options):
        calls.append((pod, argv[0], options.get("input")))
        return subprocess.CompletedProcess(argv, 0, stdout=saved if argv == ["iptables-save"] else "", stderr="")

    network = PodNetwork(PodRecord(tag="99-test", rules={"pod": "sha"}))
    monkeypatch.setattr(network, "run", run)
    with pytest.raises(RuntimeError):
        with network.capture_lifted("pod"):
            assert calls == [("pod", "iptables-save", None),
                             ("pod", "iptables-restore", "*filter\nCOMMIT\n*nat\nCOMMIT\n")]
            raise RuntimeError("the service did not become ready")
    assert calls[-1] == ("pod", "iptables-restore", saved)   # put back even when the start failed
    calls.clear()
    for pod in ("remote", None):                              # no rules loaded there: nothing to lift
        with network.capture_lifted(pod):
            pass
    assert calls == []


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a network namespace")
def test_a_namespace_another_copy_of_the_course_uses_is_refused_not_deleted():
    """Two copies of the course on one machine give their workspace's pods the same names
    (`ml11-web-v1`): starting the second must not delete the first one's namespaces."""
    from types import SimpleNamespace

    from meshlab.errors import ServiceFailed
    from meshlab.runtime.pods import NETNS_DIR, refuse_if_in_use

    name = f"ml99-test-busy-{os.getpid()}"
    record = PodRecord(tag="99-test", namespaces={"pod": name})
    lab = SimpleNamespace(slug="99-test")
    subprocess.run(["ip", "netns", "add", name], check=True)
    holder = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "30"])
    try:
        deadline = time.monotonic() + 5
        while not subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(ServiceFailed) as refused:
            refuse_if_in_use(record, lab)
        assert f"{name} is in use (pids {holder.pid})" in str(refused.value)
        assert "meshlab stop 99" in refused.value.fix and f"kill {holder.pid}" in refused.value.fix
        assert (NETNS_DIR / name).exists()
    finally:
        holder.kill()
        holder.wait()
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
    refuse_if_in_use(record, lab)           # gone: nothing to refuse


def test_the_reaper_is_sent_away_only_after_everything_else_is_removed(tmp_path, monkeypatch):
    # An owner killed halfway through its own teardown still has its reaper to finish it.
    from meshlab.runtime import pods

    done = []
    monkeypatch.setattr(pods, "_empty_cgroup", lambda directory, **_: done.append(f"cgroup {directory.name}"))
    monkeypatch.setattr(pods, "_signal", lambda pid, sig: done.append(f"signal {pid} {sig.name}"))
    record = PodRecord(tag="99-test", namespaces={"pod": "ml99-test-nothing-here"},
                       cgroups={"mesh": str(tmp_path / "mesh")}, reaper_pid=4242)
    teardown(record)
    assert done == ["cgroup mesh", "signal 4242 SIGTERM"]


def test_the_runs_private_folders_go_before_the_reaper_is_sent_away(tmp_path, monkeypatch):
    # The services' state folder holds keys (a CA's): a killed owner's reaper removes it
    # with the pods, and a normal stop removes it before the reaper may leave.
    from meshlab.runtime import pods

    private = tmp_path / "state"
    (private / "mesh-ca").mkdir(parents=True)
    (private / "mesh-ca" / "ca.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    seen = []
    monkeypatch.setattr(pods, "_signal", lambda pid, sig: seen.append(private.exists()))
    record = PodRecord(tag="99-test", namespaces={"pod": "ml99-test-nothing-here"}, reaper_pid=4242,
                       private_folders=[str(private)])
    assert f"folder {private}" in teardown(record)
    assert not private.exists() and seen == [False]
    assert teardown(record) == []  # twice: quiet
