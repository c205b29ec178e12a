"""The CLI starts fast: `meshlab --help` and `meshlab list` import no command they do not
run, so neither pytest nor the checker's machinery nor an HTTP client; and the listing
of commands, kept beside their import paths, says what each command says of itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest

from conftest import ROOT

# What a learner's quick commands must not pay for: the checker's and the runtime's.
HEAVY = ("pytest", "_pytest", "meshlab.grading", "meshlab.session", "meshlab.checking", "meshlab.watch",
         "httpx", "grpc", "meshlab.runtime.local")

PROBE = """
import io, json, sys
from contextlib import redirect_stdout
from meshlab.cli import main
args = json.loads(sys.argv[1])
if args is not None:
    with redirect_stdout(io.StringIO()):
        try:
            main(args, prog_name="meshlab")
        except SystemExit as exit_:
            assert not exit_.code, exit_.code
print(json.dumps(sorted(sys.modules)))
"""


def modules_after(args: list[str] | None, state_dir) -> set[str]:
    """The modules a fresh interpreter holds after importing the CLI (and running ARGS)."""
    env = {**os.environ, "MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": str(state_dir)}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("args", [None, ["--help"], ["list"], ["list", "--json"], ["hint", "1"]],
                         ids=lambda args: "import" if args is None else " ".join(args))
def test_quick_commands_import_neither_pytest_nor_the_checker(args, state_dir):
    modules = modules_after(args, state_dir)
    assert "meshlab.cli" in modules
    assert heavy_in(modules) == []


# What `meshlab list` must not pay for either, though it reads the course and draws a
# table: OpenSSL (hashlib: the course cache compares copies of the files it came from),
# subprocess (git runs only where a starter is read) and rich's table of emoji codes (the
# table's cells are parsed without emoji codes, once). `list --json` draws nothing: no rich.
NOT_FOR_LIST = ("hashlib", "_hashlib", "subprocess", "rich._emoji_codes")


@pytest.mark.parametrize("args", [["list"], ["list", "--json"]], ids=" ".join)
def test_list_imports_no_openssl_no_subprocess_and_no_emoji_table(args, state_dir):
    modules_after(args, state_dir)  # the first reads the YAML and keeps the course
    modules = modules_after(args, state_dir)
    assert "meshlab.course" in modules and "meshlab.yamlfile" not in modules  # served from the cache
    assert ("rich" in modules) == (args == ["list"])
    assert sorted(m for m in NOT_FOR_LIST if m in modules) == []


def test_help_imports_no_command_module(state_dir):
    modules = modules_after(["--help"], state_dir)
    assert sorted(m for m in modules if m.startswith("meshlab.cli.")) == []


def test_the_probe_would_see_a_heavy_import(state_dir):
    # The guards above are only worth something if they can fail: a command's own
    # `--help` loads its module, and the checker's machinery is found when imported.
    assert "meshlab.cli.check" in modules_after(["check", "--help"], state_dir)
    env = {**os.environ, "MESHLAB_ROOT": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", "import sys, json, meshlab.session; print(json.dumps(sorted(sys.modules)))"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert {"pytest", "meshlab.session", "meshlab.grading", "httpx"} <= set(heavy_in(set(json.loads(proc.stdout))))


def test_the_listing_says_what_each_command_says_of_itself():
    from meshlab.cli import COMMANDS, command_named, main

    for name, (_, short_help) in COMMANDS.items():
        command = command_named(name)
        assert isinstance(command, click.Command) and command.name == name
        listed = click.Command(name, help=short_help)
        for limit in (30, 45, 80, 200):
            assert listed.get_short_help_str(limit) == command.get_short_help_str(limit), name
    assert set(main.list_commands(click.Context(main))) == set(COMMANDS)


def test_help_lists_every_command_with_its_short_help(cli):
    from meshlab.cli import COMMANDS

    text = cli("--help").stdout
    for name, (_, short_help) in COMMANDS.items():
        line = next((line for line in text.splitlines() if line.split()[:1] == [name]), None)
        assert line is not None, f"{name} missing from --help"
        assert short_help.split()[0] in line


@pytest.mark.parametrize("module, allowed", [
    ("meshlab.checking", ("meshlab.checking",)),
    ("meshlab.watch", ("meshlab.checking", "meshlab.watch", "meshlab.runtime.local", "httpx")),  # it runs the lab
])
def test_check_and_watch_leave_pytest_to_the_checker_process(module, allowed):
    # `meshlab check` runs pytest in a child; the CLI's own process needs none of it.
    env = {**os.environ, "MESHLAB_ROOT": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [m for m in heavy_in(set(json.loads(proc.stdout))) if not m.startswith(allowed)] == []


def test_ctrl_c_while_the_cli_is_still_loading_exits_130_without_a_traceback(state_dir):
    # The first tenths of a second are imports; a learner's Ctrl-C there stops nothing
    # (nothing was started) and deserves no Python traceback. (One that lands while the
    # interpreter itself starts, or finds the meshlab package, comes before any of
    # meshlab's code runs: Python's own, a few milliseconds.)
    import signal
    import time

    env = {**os.environ, "MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": str(state_dir)}
    # The child says when it is inside the guarded part: as it looks for meshlab.cli.
    started = ("import sys\n"
               "class Marker:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name == 'meshlab.cli':\n"
               "            print(flush=True)\n"
               "sys.meta_path.insert(0, Marker())\n"
               "sys.argv[1:] = ['list']\n"
               "from meshlab.entry import main\n"
               "main()\n")
    for delay in (0.0, 0.01, 0.02, 0.04, 0.08):
        proc = subprocess.Popen([sys.executable, "-c", started], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc.stdout.readline()
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert "Traceback" not in stderr, (delay, stderr)
        # 130 from meshlab; a Ctrl-C within click's own parsing is its "Aborted!" and 1
        assert proc.returncode in (0, 130) or (proc.returncode == 1 and "Aborted!" in stderr), \
            (delay, proc.returncode, stderr)
