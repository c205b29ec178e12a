"""processes.spawn in a process that runs other threads (a gRPC server, as the xDS
tests and benchmark do): children start reliably and still die with their parent."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from meshlab.grading import eventually
from meshlab.runtime import processes
from meshlab.xds import SnapshotCache, serve_in_thread
from meshlab.xds.proxy import DynamicEnvoy


def test_envoys_start_next_to_a_busy_grpc_server(tmp_path: Path):
    """Before spawn armed the parent-death signal with setpriv in threaded processes,
    about one start in three of a few Envoys connected to an in-process xDS server
    crashed in the child, between fork and exec (SIGSEGV or SIGABRT)."""
    with serve_in_thread(SnapshotCache()) as running:
        envoys = []
        try:
            for i in range(8):
                envoys.append(DynamicEnvoy(f"e{i}", xds_port=running.port, workdir=tmp_path).start())
            assert all(envoy.alive() for envoy in envoys)
        finally:
            for envoy in envoys:
                envoy.stop()


def test_a_child_of_a_threaded_parent_dies_with_it(tmp_path: Path):
    parent = (
        "import os, subprocess, sys, threading, time\n"
        "from pathlib import Path\n"
        "from meshlab.runtime import processes\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "child = processes.spawn(['sleep', '60'], cwd=Path('.'), env=dict(os.environ),\n"
        "                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, die_with_parent=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    child_pid = int(proc.stdout.readline())
    assert processes.alive(child_pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert eventually(lambda: not processes.alive(child_pid), 5)
