"""Lab 09's checker sends its bursts from a pool of threads released together by a
gate; a Ctrl-C while the burst is handed to the pool cancels the sends not yet begun,
and the begun ones must not wait for them at the gate (the pool's shutdown would wait
for them forever, and the run's stop with it)."""

from __future__ import annotations

import importlib.util
import sys
import threading
from types import SimpleNamespace

import pytest

from conftest import ROOT


def checker_module():
    spec = importlib.util.spec_from_file_location("lab09_checks", ROOT / "checker" / "test_09_rate_limit.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_burst_interrupted_while_handed_out_leaves_no_send_waiting():
    together_type = checker_module().Together
    lab = SimpleNamespace(url=lambda envoy, role: "http://127.0.0.1:9")  # refused at once
    outcome: list[BaseException] = []

    def burst() -> None:
        try:
            with together_type(lab, 3) as together:
                submit, handed = together.pool.submit, []

                def submit_then_interrupt(fn, *args):
                    if handed:
                        raise KeyboardInterrupt  # the Ctrl-C, once the first send was handed out
                    handed.append(fn)
                    return submit(fn, *args)

                together.pool.submit = submit_then_interrupt
                together.send([("envoy-a", "/", None)] * 3)
        except BaseException as error:  # noqa: BLE001 - what the burst ended with
            outcome.append(error)

    thread = threading.Thread(target=burst, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the burst's pool still waits for a send stuck at the gate"
    assert outcome and isinstance(outcome[0], KeyboardInterrupt)
