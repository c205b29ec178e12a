"""A Mini-Mesh of many real sidecars on this machine: the time from a manifest change to
every sidecar's ACK (p50/p99 over sidecars and rounds), and memory per sidecar.

    sudo .venv/bin/python benchmarks/mesh_scale.py                    # 50 sidecars, 10 rounds
    sudo .venv/bin/python benchmarks/mesh_scale.py --sidecars 20 --rounds 5

The mesh: services s0 ... sN-1 (one version each, meshlab.apps.tier), each in its pod
with an injected Envoy, lab 11's solution as the control plane, s{k} allowed to call
s{k+1}. A round rewrites mesh.yaml with a new header route on s0, which changes s0's
route configuration in every sidecar; from the write, the control plane's /status is
polled (every 20 ms, from inside its pod) until each node acknowledged its new version.
A sidecar's time includes the control plane noticing the file (it polls every 50 ms)
and building every node's snapshot. The baseline row is the same round with 1 sidecar,
measured first in the same run; other rows print their ratio to it.
Memory is each Envoy's resident set (VmRSS) after the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from meshlab.course import load_course  # noqa: E402
from meshlab.mesh import inject, manifest  # noqa: E402
from meshlab.session import LabSession, run_dir_for  # noqa: E402

SLUG = "11-mini-mesh"


def mesh_yaml(count: int, round_mark: int) -> str:
    lines = ["format: 1", "trust_domain: meshlab.test", "certificates: {ttl: 1h}",
             "control_plane: {xds: 18000, admin: 18001}", "services:"]
    for k in range(count):
        lines += [f"  s{k}:", "    port: 8080", "    versions:",
                  f"      v1: {{python: meshlab.apps.tier, args: [--name, s{k}, --version, v1, --port, \"8080\"]}}"]
    lines += ["traffic:", "  s0:", f"    - match: {{headers: {{x-round: \"{round_mark}\"}}}}", "      to: {v1: 100}",
              "    - to: {v1: 100}", "authorization:"]
    lines += [f"  s{k + 1}: [s{k}]" for k in range(count - 1)]
    return "\n".join(lines) + "\n"


def course_with(count: int, folder: Path) -> Path:
    """A course of one lab: lab 11's manifest, solution and a mesh of COUNT services."""
    (folder / "labs" / SLUG).mkdir(parents=True)
    (folder / "course.yaml").write_text(f"title: mesh scale\nlabs:\n  - {SLUG}\n")
    lab_yaml = (ROOT / "labs" / SLUG / "lab.yaml").read_text()
    (folder / "labs" / SLUG / "lab.yaml").write_text(lab_yaml)
    shutil.copy(ROOT / "solutions" / SLUG / "control_plane.py", folder / "labs" / SLUG / "control_plane.py")
    (folder / "labs" / SLUG / "mesh.yaml").write_text(mesh_yaml(count, 0))
    return folder


def status(http: httpx.Client, port: int) -> dict:
    return http.get(f"http://127.0.0.1:{port}/status").json()["nodes"]


def measure(count: int, rounds: int) -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="meshlab-scale-"))
    root = course_with(count, scratch / "course")
    course = load_course(root)
    lab = course.find(11)
    # A folder other than the workspace: the run's namespaces get a tag of their own
    # (ml11-<hash>-...), never the ml11-... of a learner's running lab.
    lab_dir = scratch / "run"
    shutil.copytree(lab.workspace, lab_dir)
    started = time.monotonic()
    session = LabSession.open(lab, lab_dir, run_dir_for(course, lab, lab_dir))
    start_seconds = time.monotonic() - started
    times: list[float] = []
    try:
        mesh = manifest.load(lab.mesh)
        http = session.runtime.pods.client(inject.CONTROL_POD, timeout=10.0)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            nodes = status(http, mesh.admin_port)
            if len(nodes) == count and all(n["acked"] and n["acked"] == n["target"] for n in nodes.values()):
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"the {count} sidecars never all acknowledged their first configuration")
        for round_mark in range(1, rounds + 1):
            before = {name: node["target"] for name, node in status(http, mesh.admin_port).items()}
            written = time.monotonic()
            (lab_dir / "mesh.yaml").write_text(mesh_yaml(count, round_mark))
            acked: dict[str, float] = {}
            deadline = written + 60
            while len(acked) < count and time.monotonic() < deadline:
                now = time.monotonic()
                for name, node in status(http, mesh.admin_port).items():
                    if name not in acked and node["target"] != before[name] and node["acked"] == node["target"]:
                        acked[name] = now - written
                time.sleep(0.02)
            if len(acked) < count:
                raise SystemExit(f"round {round_mark}: only {len(acked)} of {count} sidecars acknowledged in 60 s")
            times += acked.values()
        session.runtime.refresh()
        rss = []
        for spec in lab.envoys:
            pid = session.runtime.state.services[spec.name].pid
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss.append(int(line.split()[1]) / 1024)
        http.close()
    finally:
        session.close()
        shutil.rmtree(scratch, ignore_errors=True)
    ordered = sorted(times)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"sidecars": count, "rounds": rounds, "start_s": start_seconds, "p50_ms": pick(0.5), "p99_ms": pick(0.99),
            "max_ms": ordered[-1] * 1000, "rss_mib_mean": sum(rss) / len(rss), "rss_mib_max": max(rss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sidecars", type=int, default=50, help="sidecars of the big mesh (default 50, at most 54)")
    parser.add_argument("--rounds", type=int, default=10, help="manifest changes measured (default 10)")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("pods need root: run with sudo")
    if not 1 < options.sidecars <= 54:
        sys.exit("--sidecars must be 2-54 (the mesh's /24 holds 54 services' virtual addresses)")
    rows = [measure(1, options.rounds), measure(options.sidecars, options.rounds)]
    for row in rows:
        row["p50_ratio"] = row["p50_ms"] / rows[0]["p50_ms"]
    if options.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{platform.node()} · {os.cpu_count()} cores · {time.strftime('%Y-%m-%d')}")
    print(f"{'sidecars':>8} {'start s':>8} {'ACK p50 ms':>11} {'p99 ms':>8} {'max ms':>8} {'p50 x':>6} "
          f"{'RSS MiB mean/max':>17}")
    for row in rows:
        print(f"{row['sidecars']:>8} {row['start_s']:>8.1f} {row['p50_ms']:>11.1f} {row['p99_ms']:>8.1f} "
              f"{row['max_ms']:>8.1f} {row['p50_ratio']:>6.2f} {row['rss_mib_mean']:>8.1f}/{row['rss_mib_max']:.1f}")


if __name__ == "__main__":
    main()
