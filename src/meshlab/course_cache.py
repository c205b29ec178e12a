"""The parsed course, kept between commands.

Every command starts by reading course.yaml and every lab's manifest (PyYAML, then the
checks of `meshlab.course`, the Mini-Mesh's injection): about 45 ms of a 150 ms
`meshlab list`, paid again by the checker process of every `meshlab check`. The loaded
course is kept pickled in the state folder, with a copy of every file the load read
and of the loader's own modules (about 90 KB, under 1 ms to compare); a change to any
of them (an edited lab.yaml, a lab added to course.yaml, a new meshlab) loads afresh.
A copy rather than a digest: it is exact, and hashlib would load OpenSSL, about 3 ms of
a `meshlab list`. A course
that fails to load is never kept, so its error is shown every time.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from meshlab.course import Course

CACHE_FILE = "course.pickle"
_FORMAT = 3

# The modules whose code turns the files into a Course: a changed loader is a changed course.
_PACKAGE = Path(__file__).resolve().parent
_LOADER = tuple(_PACKAGE / name for name in ("course.py", "course_cache.py", "yamlfile.py", "mesh/manifest.py",
                                             "mesh/inject.py"))


def _cache_file(root: Path) -> Path:
    # Course.state_dir's rule, without a Course to ask.
    return Path(os.environ.get("MESHLAB_STATE_DIR", root / ".meshlab")) / CACHE_FILE


def _stamps(paths: Iterable[Path]) -> tuple:
    # By content, not modification time: two saves within the file system's clock tick
    # (a script, a test) can leave the same time and size on different text.
    stamps = []
    for path in paths:
        try:
            stamps.append((str(path), Path(path).read_bytes()))
        except OSError:
            stamps.append((str(path), None))
    return tuple(stamps)


def read(root: Path) -> Course | None:
    """The cached course of ROOT, if every file it came from is as it was; else None."""
    try:
        with open(_cache_file(root), "rb") as handle:
            kept = pickle.load(handle)
        fresh = (kept["format"] == _FORMAT and kept["python"] == sys.version_info[:2] and kept["root"] == str(root)
                 and kept["stamps"] == _stamps(Path(path) for path, _ in kept["stamps"]))
    except Exception:  # absent, another version's, unreadable: load afresh
        return None
    return kept["course"] if fresh else None


def write(course: Course, files: Iterable[Path]) -> None:
    """Keep COURSE, loaded from FILES; silently nothing where the state folder is not writable."""
    paths = [*_LOADER, *(Path(f).resolve() for f in files)]
    data = {"format": _FORMAT, "python": sys.version_info[:2], "root": str(course.root), "stamps": _stamps(paths),
            "course": course}
    target = _cache_file(course.root)
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            pickle.dump(data, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, target)  # whole or not at all, whoever writes last
    except OSError:
        temporary.unlink(missing_ok=True)
