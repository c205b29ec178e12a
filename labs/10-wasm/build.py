"""Build filter.rs into build/filter.wasm, the module Envoy loads (meshlab runs this
before every start and check of lab 10; you may run it yourself: `python3 build.py`).

Two rustc runs, no Cargo and no crates.io: the course's proxy-wasm module
(proxy_wasm/) becomes an rlib, then filter.rs becomes a cdylib for
wasm32-unknown-unknown linked against it, exactly as Cargo would link the
`proxy-wasm` crate. A build whose inputs (the sources, the compiler, the flags) have
not changed is skipped: build/filter.wasm.sha256 records what the module was built from
(and build/libproxy_wasm.rlib.sha256 the same for the course's module). Outputs are
also kept in ~/.cache/meshlab/wasm/ by that hash, so another copy of the same sources
(a `meshlab check --solution`, a reset) is not compiled again either.

A compile error exits 1 with rustc's own message, which names FILE:LINE:COLUMN.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = "filter.rs"
MODULE = "proxy_wasm"
BUILD = "build"
TARGET = "wasm32-unknown-unknown"
FLAGS = ["--edition", "2021", "--target", TARGET, "-O", "-C", "strip=debuginfo"]
INSTALL = "sudo apt-get install rustc libstd-rust-dev-wasm32"


def find_rustc() -> str | None:
    """The first rustc that has the standard library for wasm32-unknown-unknown:
    $RUSTC, then rustc on PATH, then Debian's (a rustup rustc often lacks the target)."""
    candidates = [os.environ.get("RUSTC"), shutil.which("rustc"), "/usr/bin/rustc"]
    for rustc in dict.fromkeys(c for c in candidates if c):
        try:
            sysroot = subprocess.run([rustc, "--print", "sysroot"], capture_output=True, text=True,
                                     timeout=30).stdout.strip()
        except OSError:
            continue
        if sysroot and (Path(sysroot) / "lib" / "rustlib" / TARGET).is_dir():
            return rustc
    return None


@functools.lru_cache(maxsize=None)
def compiler_version(rustc: str) -> str:
    return subprocess.run([rustc, "-vV"], capture_output=True, text=True).stdout


def fingerprint(rustc: str, paths: list[Path]) -> str:
    digest = hashlib.sha256()
    digest.update(compiler_version(rustc).encode() + " ".join(FLAGS).encode())
    for path in paths:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def cache_dir() -> Path:
    """Builds shared by every copy of this lab on the machine, by content hash (like a
    compiler cache): a graded copy of an unchanged filter is not compiled again."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "meshlab" / "wasm"


def compile_once(rustc: str, folder: Path, command: list[str], output: Path, inputs: list[Path]) -> bool:
    """Run rustc COMMAND unless OUTPUT was built from these very INPUTS (here, or in the
    shared cache); False on an error (rustc's message is on stderr)."""
    stamp = output.with_name(output.name + ".sha256")
    digest = fingerprint(rustc, inputs)
    if output.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return True
    stamp.unlink(missing_ok=True)
    cached = cache_dir() / digest / output.name
    if cached.is_file():
        shutil.copyfile(cached, output)
    else:
        # Paths in panic messages relative to the lab folder, wherever it was built.
        remap = f"--remap-path-prefix={folder}{os.sep}="
        done = subprocess.run([rustc, *FLAGS, remap, *command, "-o", str(output)], cwd=folder,
                              capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            return False
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f".{cached.name}.{os.getpid()}")
            shutil.copyfile(output, partial)
            partial.replace(cached)  # whole or absent, even with two builds at once
        except OSError:
            pass  # no cache, no harm: the next build compiles again
    stamp.write_text(digest + "\n")
    return True


def build(folder: Path) -> int:
    rustc = find_rustc()
    if rustc is None:
        print(f"no rustc with the {TARGET} target found (install: {INSTALL})", file=sys.stderr)
        return 1
    out = folder / BUILD
    out.mkdir(exist_ok=True)
    module_sources = sorted((folder / MODULE).glob("*.rs"))
    rlib, wasm = out / f"lib{MODULE}.rlib", out / "filter.wasm"
    before = wasm.stat().st_mtime_ns if wasm.is_file() else None
    ok = compile_once(rustc, folder, ["--crate-type", "rlib", "--crate-name", MODULE, f"{MODULE}/lib.rs"],
                      rlib, module_sources) and \
        compile_once(rustc, folder, ["--crate-type", "cdylib", "--crate-name", "filter",
                                     "--extern", f"{MODULE}={rlib}", SOURCE],
                     wasm, [folder / SOURCE, *module_sources])
    if not ok:
        return 1
    fresh = before is None or wasm.stat().st_mtime_ns != before
    print(f"built {BUILD}/filter.wasm ({wasm.stat().st_size} bytes)" if fresh else f"{BUILD}/filter.wasm is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(build(HERE))
