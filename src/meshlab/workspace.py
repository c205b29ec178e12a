"""The lab folders a learner edits, and the pristine copies graded by audit and reset.

The starter of a lab is what the course committed under `labs/NN-slug` (read with git,
so a learner's edits never leak into an audit); a solution is that starter with the
files of `solutions/NN-slug` laid over it, so a solution folder holds only the files
the learner would change.

A course downloaded as an archive has no git: there, the first meshlab command keeps a
copy of every lab's starter files in `.meshlab/starters/` before the learner edits
anything, and `meshlab reset` restores from that copy.
"""

from __future__ import annotations

import io
import shutil
import time  # (subprocess: imported where git runs, so `meshlab list` opens the course without it)
from pathlib import Path

from meshlab.course import Course, Lab
from meshlab.errors import MeshlabError


def _git_tree(course: Course, folder: Path) -> bytes | None:
    """A tar of FOLDER as committed at HEAD, or None outside a git checkout."""
    if shutil.which("git") is None:
        return None
    relative = folder.resolve().relative_to(course.root)
    import subprocess

    proc = subprocess.run(["git", "-C", str(course.root), "archive", "--format=tar", "HEAD", "--", str(relative)],
                          capture_output=True)
    return proc.stdout if proc.returncode == 0 and proc.stdout else None


def _git(course: Course, *args: str) -> str | None:
    """The output of `git ARGS` at the course root, or None outside a git checkout."""
    if shutil.which("git") is None:
        return None
    import subprocess

    proc = subprocess.run(["git", "-C", str(course.root), *args], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def committed_revision(course: Course) -> str | None:
    """The short commit id the starters are read from (HEAD), or None outside git."""
    out = _git(course, "rev-parse", "--short", "HEAD")
    return out.strip() if out else None


def uncommitted(course: Course, folder: Path) -> list[str]:
    """Files under FOLDER that differ from HEAD (changed, added or deleted), relative to the root."""
    out = _git(course, "status", "--porcelain", "--untracked-files=all", "--",
               str(folder.resolve().relative_to(course.root)))
    return sorted(line[3:].strip() for line in (out or "").splitlines() if line.strip())


def _fresh(dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    return dest


def pristine_starter(course: Course, lab: Lab, dest: Path, *, working_tree: bool = False) -> Path:
    """Write LAB's committed starter into DEST (the working tree outside git, or when
    WORKING_TREE asks for the files as they are now)."""
    _fresh(dest)
    archive = None if working_tree else _git_tree(course, lab.workspace)
    if archive is None:
        shutil.copytree(lab.workspace, dest, dirs_exist_ok=True)
        return dest
    prefix = str(lab.workspace.resolve().relative_to(course.root)) + "/"
    import tarfile  # only here: every command imports this module

    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(prefix):
                target = dest / member.name[len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
                target.chmod(member.mode & 0o777)
    return dest


def solution_tree(course: Course, lab: Lab, dest: Path, *, starter: Path | None = None) -> Path:
    """Write the solved lab into DEST: the starter (STARTER, else the working tree)
    with solutions/NN-slug laid over it."""
    if not lab.solution.is_dir():
        raise MeshlabError(f"lab {lab.slug} has no solution folder at {lab.solution}")
    _fresh(dest)
    shutil.copytree(starter or lab.workspace, dest, dirs_exist_ok=True)
    shutil.copytree(lab.solution, dest, dirs_exist_ok=True)
    return dest


def in_git(course: Course) -> bool:
    """Whether the course is a git checkout (a clone or a worktree), without running git."""
    return any((folder / ".git").exists() for folder in (course.root, *course.root.parents))


def starter_copy(course: Course, lab: Lab) -> Path:
    return course.state_dir / "starters" / lab.slug


def keep_starter_copies(course: Course) -> None:
    """Outside git, copy each lab's starter files the first time meshlab sees the course,
    so `meshlab reset` can restore them later."""
    if in_git(course):
        return
    for lab in course.labs:
        dest = starter_copy(course, lab)
        if dest.is_dir():
            continue
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        for name in lab.edit:
            if (lab.workspace / name).is_file():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(lab.workspace / name, staging / name)
        staging.mkdir(parents=True, exist_ok=True)
        staging.rename(dest)  # complete or absent, never half a copy


def reset(course: Course, lab: Lab) -> tuple[Path, list[str]]:
    """Restore the starter versions of the learner's files; the current ones are kept
    in a backup folder. Returns (backup folder, restored files)."""
    staging = course.state_dir / "graded" / f"{lab.slug}-reset"
    if _git_tree(course, lab.workspace) is not None:
        pristine_starter(course, lab, staging)
    elif starter_copy(course, lab).is_dir():
        _fresh(staging)
        shutil.copytree(starter_copy(course, lab), staging, dirs_exist_ok=True)
    else:
        raise MeshlabError(
            f"cannot find the starter of lab {lab.slug}: this copy of the course is not a git clone, and "
            f"meshlab kept no copy of the starter (it keeps one the first time it runs, in "
            f"{starter_copy(course, lab)})",
            fix="take the lab's files from a fresh download or a git clone of the course")
    backup = course.state_dir / "backups" / lab.slug / time.strftime("%Y%m%d-%H%M%S")
    restored = []
    for name in lab.edit:
        current, original = lab.workspace / name, staging / name
        if current.exists():
            (backup / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(current, backup / name)
        if original.exists():
            current.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(original, current)
            restored.append(name)
    shutil.rmtree(staging, ignore_errors=True)
    return backup, restored
