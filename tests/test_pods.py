"""The pieces of meshlab.runtime.pods that need no kernel privileges: names, the
learner-facing error for refused rules, and how a service is entered."""

from __future__ import annotations

import signal
from pathlib import Path

from meshlab.runtime import enter
from meshlab.runtime.pods import PodRecord, _rules_error, tag_for, teardown


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
