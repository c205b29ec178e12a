"""The checker's own process: pytest with the checker's two plugins, ended the moment
pytest returns.

    python -m meshlab.checker_process [--isolated] PYTEST-ARGS...

`meshlab check` starts this as a child (see `meshlab.checking`). It is a module of its
own, rather than `python -m pytest`, for what a learner waits for on every check:

- `--isolated`: the child was started by `unshare` in a new network namespace
  (`isolation.wrap_python`), and sets it up here instead of in one more interpreter;
- httpx imports its own command-line client at import time, and with it rich and click
  (about 60 ms); no check uses it, and a failed import is what httpx expects without them;
- once pytest returns, the lab is stopped and the report is written: tearing down an
  interpreter that imported pytest, httpx and a checker takes 100 ms or more and nothing
  needs it, so the process ends at once (after flushing what it printed).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if argv[:1] == ["--isolated"]:
        from meshlab import isolation

        isolation.set_up_namespace()
        argv = argv[1:]
    sys.modules.setdefault("httpx._main", None)  # None in sys.modules: that import fails
    import pytest

    return int(pytest.main(argv))


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
