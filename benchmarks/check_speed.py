"""How long a learner waits: `meshlab check N` for each lab, the CLI's start, and the
round trip of `meshlab watch` from a save to the first result.

    .venv/bin/python benchmarks/check_speed.py                  # labs 01-06, 5 checks each
    .venv/bin/python benchmarks/check_speed.py --labs 1,3 -n 20
    .venv/bin/python benchmarks/check_speed.py --json
    .venv/bin/python benchmarks/check_speed.py --labs 8 --watch 1,8

The floor, measured first in the same run, is what no check can go below: a bare Python
interpreter start (the checker is a child process) plus one Envoy started to `/ready`
(every lab starts at least one). Each lab's row is the median of N solution checks
(`meshlab check N --solution --isolate`, wall time, a fresh network namespace each) and
its ratio to that floor; a run that does not pass is reported, not timed. Under it, the
median of the same runs' checks alone (the sum of the `duration`s in `--json`: grading,
without start-up, set-up and teardown), and the median CPU time of every process of the
run (the checker, the lab's services, Envoy; user and system) divided by the machine's
cores: the shortest wall time any schedule of that work could have. The CLI rows
are the median wall time of `meshlab --help` and `meshlab list` as ratios to the bare
interpreter, and `import meshlab.cli` from `python -X importtime`. A watch row (lab 01's,
and those of the labs --watch names) is the lab's solution watched in a network namespace
of its own: a save of the first file the lab's `edit:` names (a draft renamed over it, as
editors do) to the check's result, the restart of what reads that file included, N times.
This is the learner's loop: the lab keeps running between saves, so a lab whose cold
check waits for a slow service's start (lab 08's Prometheus) pays for it once.

Children run with bytecode caching on (Python's default on a learner's machine, even
where PYTHONDONTWRITEBYTECODE is set for this process) and a state folder of their own.

    .venv/bin/python benchmarks/check_speed.py --baseline ../meshlab-before

compares with another version of meshlab (a checkout: its src/ goes first on PYTHONPATH):
every measurement alternates between the two, run by run, so that both see the same load
on a shared machine, and each row prints the ratio of this checkout to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from meshlab import isolation, workspace
from meshlab.course import load_course
from meshlab.envoy import EnvoyProcess

ADMIN_ONLY = """\
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
"""

WATCH_ROUND_TRIP = """
import json, sys, threading, time
from pathlib import Path
from meshlab.course import load_course
from meshlab.watch import watch

course = load_course()
lab = course.find(int(sys.argv[3]))
lab_dir, rounds = Path(sys.argv[1]), int(sys.argv[2])
times, saved = [], []

def save():
    time.sleep(0.3)  # the learner is not that fast; and the mtime must move on
    config = lab_dir / lab.edit[0]
    draft = config.with_name(config.name + ".draft")
    draft.write_text(config.read_text() + f"# saved {len(times)}\\n")  # a comment in YAML and Python
    saved.append(time.perf_counter())
    draft.replace(config)

def on_result(result, restarted):
    if saved:
        times.append({"seconds": time.perf_counter() - saved[-1], "status": result.status,
                      "restarted": restarted})
    if len(times) < rounds:
        threading.Thread(target=save).start()

watch(course, lab, lab_dir, on_result=on_result, on_error=lambda error: print(error.message, file=sys.stderr),
      on_waiting=lambda files: None, max_rounds=rounds + 1)
print(json.dumps(times))
"""


def child_env(state_dir: Path, checkout: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "MESHLAB_STATE_DIR": str(state_dir), "COLUMNS": "120"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if checkout is not None:  # another version of meshlab, and its course
        env["PYTHONPATH"] = str(checkout / "src")
        env["MESHLAB_ROOT"] = str(checkout)
    return env


def wall(argv: list[str], env: dict[str, str], **options) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, **options)
    return time.perf_counter() - started, proc


def children_cpu() -> float:
    """CPU seconds (user and system) of every child and grandchild waited for so far: a
    check's own services are its children, so a check's delta is the lab's whole CPU."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def floor(n: int, env: dict[str, str], workdir: Path) -> dict[str, float]:
    python = statistics.median(wall([sys.executable, "-c", "pass"], env)[0] for _ in range(n))
    config = workdir / "admin-only.yaml"
    config.write_text(ADMIN_ONLY)
    envoy_times = []
    for index in range(n):
        started = time.perf_counter()
        with EnvoyProcess(config, workdir=workdir, name=f"floor-{index}"):
            envoy_times.append(time.perf_counter() - started)
    envoy = statistics.median(envoy_times)
    return {"python_s": python, "envoy_s": envoy, "floor_s": python + envoy}


def cli_start(n: int, sides: dict[str, tuple[dict, Path]]) -> dict[str, dict[str, float]]:
    """Per side: the median wall time of `meshlab --help` and `meshlab list`, and the
    import time of meshlab.cli; the sides alternate run by run."""
    meshlab = [sys.executable, "-m", "meshlab"]
    for env, root in sides.values():
        wall([*meshlab, "--help"], env, cwd=root)  # bytecode written once, as after an install
    samples: dict[str, dict[str, list[float]]] = {side: {} for side in sides}
    for _ in range(n):
        for side, (env, root) in sides.items():
            for words in (["--help"], ["list"]):
                samples[side].setdefault(" ".join(words), []).append(wall([*meshlab, *words], env, cwd=root)[0])
            _, proc = wall([sys.executable, "-X", "importtime", "-c", "import meshlab.cli"], env, cwd=root)
            cumulative = [int(m.group(1)) for m in re.finditer(r"\|\s*(\d+) \| meshlab\.cli$", proc.stderr, re.M)]
            samples[side].setdefault("import meshlab.cli", []).append(cumulative[-1] / 1e6)
    return {side: {name: statistics.median(values) for name, values in rows.items()} for side, rows in samples.items()}


def check_times(lab_number: int, n: int, sides: dict[str, tuple[dict, Path]]) -> dict[str, dict]:
    """Per side: N solution checks of the lab, the sides alternating run by run."""
    times: dict[str, list[float]] = {side: [] for side in sides}
    checks: dict[str, list[float]] = {side: [] for side in sides}   # the checks' own part of each run
    cpu: dict[str, list[float]] = {side: [] for side in sides}      # CPU seconds of each run, all processes
    failures: dict[str, list[str]] = {side: [] for side in sides}
    for _ in range(n):
        for side, (env, root) in sides.items():
            cpu_before = children_cpu()
            seconds, proc = wall([sys.executable, "-m", "meshlab", "check", str(lab_number), "--solution",
                                  "--isolate", "--json"], env, cwd=root, timeout=600)
            cpu_used = children_cpu() - cpu_before
            try:
                result = json.loads(proc.stdout)
                status = result["status"]
            except (json.JSONDecodeError, KeyError):
                result, status = {}, f"exit {proc.returncode}"
            if status == "pass":
                times[side].append(seconds)
                cpu[side].append(cpu_used)
                checks[side].append(sum(c.get("duration") or 0.0 for c in result.get("checks", [])))
            else:  # which checks, and why: a benchmark run is also a run of the checks
                failed = [f"{c.get('name')}: {(c.get('message') or c.get('received') or '')[:300]}"
                          for c in result.get("checks", []) if c.get("status") not in ("pass", "skip")]
                failures[side].append(status + (f" ({'; '.join(failed)})" if failed else ""))
    return {side: {"runs": n, "median_s": statistics.median(times[side]) if times[side] else None,
                   "min_s": min(times[side], default=None),
                   "checks_median_s": statistics.median(checks[side]) if checks[side] else None,
                   "cpu_median_s": statistics.median(cpu[side]) if cpu[side] else None,
                   "failures": failures[side]} for side in sides}


def watch_round_trip(number: int, n: int, env: dict[str, str], root: Path, workdir: Path) -> dict:
    course = load_course(root)
    lab_dir = workspace.solution_tree(course, course.find(number), workdir / f"watched-{number:02d}")
    argv = [sys.executable, "-c", WATCH_ROUND_TRIP, str(lab_dir), str(n), str(number)]
    if isolation.available():
        argv = isolation.wrap(argv)
    _, proc = wall(argv, env, cwd=root, timeout=600)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    rounds = json.loads(proc.stdout.strip().splitlines()[-1])
    seconds = [r["seconds"] for r in rounds if r["status"] == "pass"]
    return {"rounds": len(rounds), "median_s": statistics.median(seconds) if seconds else None,
            "max_s": max(seconds, default=None), "not_passing": [r["status"] for r in rounds if r["status"] != "pass"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labs", default="1,2,3,4,5,6", help="comma-separated lab numbers (default 1-6)")
    parser.add_argument("-n", type=int, default=5, help="checks per lab, watch saves, CLI starts (default 5)")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="another version of meshlab to alternate with, run by run")
    parser.add_argument("--watch", default="1", help="labs whose watch round trip to time (default 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    course = load_course()
    with tempfile.TemporaryDirectory(prefix="meshlab-speed-") as tmp:
        workdir = Path(tmp)
        sides = {"this": (child_env(workdir / "state"), course.root)}
        if args.baseline:
            baseline = args.baseline.resolve()
            sides["baseline"] = (child_env(workdir / "state-baseline", baseline), baseline)
        base = floor(max(args.n, 5), sides["this"][0], workdir)
        cli = cli_start(max(args.n, 10), sides)
        labs = {number: check_times(number, args.n, sides) for number in map(int, args.labs.split(","))}
        watched = {number: {side: watch_round_trip(number, args.n, env, root, workdir / side)
                            for side, (env, root) in sides.items()}
                   for number in map(int, args.watch.split(","))}
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
               "floor": base, "cli": cli, "labs": labs, "watch": watched}
    if args.json:
        print(json.dumps(results, indent=2, default=str))
        return
    show(results, course, list(sides))


def show(results: dict, course, sides: list[str]) -> None:
    base = results["floor"]
    load = ", ".join(f"{x:.1f}" for x in results["machine"]["load"])
    print(f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average now {load}")
    print(f"floor: python start {base['python_s'] * 1000:.0f} ms + Envoy to /ready {base['envoy_s'] * 1000:.0f} ms"
          f" = {base['floor_s'] * 1000:.0f} ms")
    against = "baseline" in sides
    for name in results["cli"]["this"]:
        cells = []
        for side in sides:
            seconds = results["cli"][side][name]
            ratio = "" if name.startswith("import") else f" ({seconds / base['python_s']:.1f}x python)"
            cells.append(f"{side} {seconds * 1000:6.0f} ms{ratio}")
        if against:
            cells.append(f"this/baseline {results['cli']['this'][name] / results['cli']['baseline'][name]:.2f}")
        print(f"  {name:<20} " + "   ".join(cells))
    print(f"{'lab':<20} " + " ".join(f"{side + ' median':>16} {'x floor':>8}" for side in sides)
          + ("  this/baseline" if against else ""))
    for number, row in results["labs"].items():
        cells, failed = [], []
        for side in sides:
            median = row[side]["median_s"]
            cells.append(f"{median:15.2f}s {median / base['floor_s']:7.1f}x" if median else f"{'-':>16} {'-':>8}")
            if row[side]["failures"]:
                failed.append(f"{side}: {len(row[side]['failures'])} of {row[side]['runs']} not passing "
                              f"{row[side]['failures']}")
        ratio = ""
        if against and row["this"]["median_s"] and row["baseline"]["median_s"]:
            ratio = f"  {row['this']['median_s'] / row['baseline']['median_s']:13.2f}"
        print(f"{course.find(number).slug:<20} " + " ".join(cells) + ratio + (f"  ({'; '.join(failed)})" if failed else ""))
        own = {side: row[side].get("checks_median_s") for side in sides}
        if all(own.values()):
            print(f"{'  its checks alone':<20} " + " ".join(f"{own[side]:15.2f}s {'':>8}" for side in sides)
                  + (f"  {own['this'] / own['baseline']:13.2f}" if against else ""))
        cpu = {side: row[side].get("cpu_median_s") for side in sides}
        if all(cpu.values()):
            # CPU seconds over the machine's cores: no schedule of the same work is shorter.
            print(f"{'  its CPU / cores':<20} " + " ".join(f"{cpu[side] / os.cpu_count():15.2f}s {'':>8}" for side in sides)
                  + (f"  {cpu['this'] / cpu['baseline']:13.2f}" if against else "")
                  + f"  ({cpu['this']:.2f} CPU-s)")
    for number, by_side in results["watch"].items():
        lab = course.find(number)
        for side in sides:
            watched = by_side[side]
            if "error" in watched:
                print(f"watch round trip ({side}), lab {number:02d}: failed\n{watched['error']}")
            elif watched["median_s"] is not None:
                print(f"watch round trip ({side}), lab {number:02d}, save of {lab.edit[0]} -> result, its restart "
                      f"included: median {watched['median_s']:.2f} s, max {watched['max_s']:.2f} s over "
                      f"{watched['rounds']} saves"
                      + (f"; not passing: {watched['not_passing']}" if watched["not_passing"] else ""))


if __name__ == "__main__":
    main()
