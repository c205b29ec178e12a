"""Tracebacks in a service's log: only those through the learner's files are theirs."""

from __future__ import annotations

from pathlib import Path

from meshlab.grading.raised import learners_tracebacks

LOG = """--- meshlab: starting control-plane at 10:00:00
10:00:00 control-plane ERROR building the snapshot failed; keeping the previous configuration
Traceback (most recent call last):
  File "{lab}/control_plane.py", line 194, in apply
    snapshot = build_snapshot(parse_intent(text))
               ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "{lab}/control_plane.py", line 133, in build_listener
    port = int(intent.port)
           ^^^^^^^^^^^^^^^^
  File "/usr/lib/python3/dist-packages/something.py", line 9, in convert
    raise ValueError("no")
ValueError: invalid literal for int() with base 10: 'ten'
----------------------------------------
Exception occurred during processing of request from ('127.0.0.1', 40000)
Traceback (most recent call last):
  File "/usr/lib/python3.11/socketserver.py", line 691, in process_request_thread
    self.finish_request(request, client_address)
BrokenPipeError: [Errno 32] Broken pipe
"""


def test_a_traceback_through_the_learners_file_is_named_at_their_line(tmp_path: Path):
    found = learners_tracebacks("control-plane", LOG.format(lab=tmp_path), tmp_path, ["control_plane.py"])
    assert len(found) == 1, found  # the broken pipe is not the learner's doing
    raised = found[0]
    assert raised.summary == "your control plane raised ValueError at control_plane.py:133"
    details = raised.details().splitlines()
    assert details[0] == "control_plane.py:194 in apply: snapshot = build_snapshot(parse_intent(text))"
    assert details[-2] == '/usr/lib/python3/dist-packages/something.py:9 in convert: raise ValueError("no")'
    assert details[-1] == "ValueError: invalid literal for int() with base 10: 'ten'"


def test_a_relative_frame_path_is_resolved_against_the_lab(tmp_path: Path):
    log = LOG.format(lab=".")
    assert learners_tracebacks("cp", log, tmp_path, ["control_plane.py"])[0].where.line == 133
    assert learners_tracebacks("cp", log, tmp_path, ["other.py"]) == []
