"""processes.spawn in a process that runs other threads (a gRPC server, as the xDS
tests and benchmark do): children start reliably and still die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


# Forks parents that each start a thread (so spawn takes its setpriv path), spawn one
# service and exit at once, often before the child has armed its parent-death signal.
DYING_PARENTS = """
import os, subprocess, sys, threading, time
from pathlib import Path
from meshlab.runtime import processes
read_end, write_end = os.pipe()
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        child = processes.spawn(['sleep', '60'], cwd=Path('.'), env=dict(os.environ),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, die_with_parent=True)
        os.write(write_end, b'%d\\n' % child.pid)
        os._exit(0)
    os.waitpid(pid, 0)
os.close(write_end)
print(os.read(read_end, 1 << 16).decode(), end='')
"""


def test_a_child_whose_parent_dies_as_it_starts_dies_too(tmp_path: Path):
    """Without the check of the parent after arming, about two children in three of
    these outlived their parent (setpriv arms the signal a moment after spawn returns)."""
    proc = subprocess.run([sys.executable, "-c", DYING_PARENTS, "30"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    children = [int(pid) for pid in proc.stdout.split()]
    assert len(children) == 30
    try:
        assert eventually(lambda: not [pid for pid in children if processes.alive(pid)], 5)
    finally:
        for pid in children:
            if processes.alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_stopping_a_child_whose_popen_a_ctrl_c_left_locked_does_not_wait_the_grace(tmp_path: Path):
    """A KeyboardInterrupt that lands inside Popen.poll, between its lock's acquire and
    the try that releases it, leaves the lock held: a stop that then waited on the Popen
    to reap the child waited the whole grace (3 s), however fast the child died."""
    child = processes.spawn([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path,
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            die_with_parent=True)
    child._waitpid_lock.acquire()  # as the interrupted poll left it
    try:
        started = time.monotonic()
        processes.terminate_group(child.pid, child.pid, popen=child, grace=3.0)
        took = time.monotonic() - started
    finally:
        child._waitpid_lock.release()
    assert not processes.alive(child.pid)
    assert took < 1.0, f"the stop took {took:.2f} s"
    child.wait(timeout=5)
