"""The checker's own process: pytest with the checker's two plugins, ended the moment
pytest returns.

    python -m meshlab.checker_process [--isolated] [--lab SLUG] PYTEST-ARGS...

`meshlab check` starts this as a child (see `meshlab.checking`). It is a module of its
own, rather than `python -m pytest`, for what a learner waits for on every check:

- `--isolated`: the child was started by `unshare` in a new network namespace
  (`isolation.wrap_python`), and sets it up here instead of in one more interpreter;
- `--lab SLUG`: the lab's first services are launched before pytest is imported
  (`session.launch_early`), so that they boot while Python reads pytest and the checks;
  the `lab` fixture then finds them starting. Not for a checker started ahead of a save
  (`--meshlab-go`): that one must not touch the lab before the word;
- httpx imports its own command-line client at import time, and with it rich and click
  (about 60 ms); no check uses it, and a failed import is what httpx expects without them;
- pytest's temporary folder (`--basetemp`, where a check may write keys) is removed as
  the process ends, also by the SIGTERM it gets when `meshlab check` dies, and by
  `meshlab check` once it has ended: whichever of the two survives removes it;
- once pytest returns, the lab is stopped and the report is written: tearing down an
  interpreter that imported pytest, httpx and a checker takes 100 ms or more and nothing
  needs it, so the process ends at once (after flushing what it printed).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if argv[:1] == ["--isolated"]:
        from meshlab import isolation

        isolation.set_up_namespace()
        argv = argv[1:]
    scratch = argv[argv.index("--basetemp") + 1] if "--basetemp" in argv[:-1] else None
    if scratch is not None:
        signal.signal(signal.SIGTERM, lambda *_: _die_without(scratch))
    lab = None
    if argv[:1] == ["--lab"]:
        lab, argv = argv[1], argv[2:]
    sys.modules.setdefault("httpx._main", None)  # None in sys.modules: that import fails
    from meshlab import session

    try:
        if lab is not None and "--meshlab-go" not in argv:
            _launch(lab, argv)
        import pytest

        return int(pytest.main(argv))
    except KeyboardInterrupt:
        return 2  # as pytest says it was interrupted
    finally:
        session.stop_unclaimed()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _die_without(scratch: str) -> None:
    """SIGTERM (the parent `meshlab check` died): remove SCRATCH, then die of it as
    before. The services die with this process, a lab's pods go with their reaper."""
    shutil.rmtree(scratch, ignore_errors=True)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)


def _launch(slug: str, argv: list[str]) -> None:
    from meshlab.course import load_course, run_dir_for
    from meshlab.session import launch_early

    def option(name: str) -> str | None:
        return argv[argv.index(name) + 1] if name in argv[:-1] else None

    course = load_course()
    lab = course.find(slug)
    lab_dir = Path(option("--meshlab-path") or lab.workspace).resolve()
    run_dir = Path(option("--meshlab-run-dir") or run_dir_for(course, lab, lab_dir))
    launch_early(lab, lab_dir, run_dir)


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
