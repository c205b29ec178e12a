"""Lab 07, part B — given: build the lab's BPF programs and attach them (ctypes over
libbpf, the C library every BPF loader is built on).

    python bpf/loader.py compile     clang: connect4.c, sockops.c, getsockopt.c -> bpf/build/*.o
                                     (skipped for a program whose inputs did not change)
    python bpf/loader.py attach      load them, attach them to the cgroup this process
                                     runs in, serve their status on :15090, hold them

The programs stay attached while this process lives: links are file descriptors, and
the kernel detaches the programs and frees their maps when the last one closes. So
stopping the lab (or killing this process) leaves nothing in the kernel; nothing is
pinned under /sys/fs/bpf.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = {"connect4": HERE.parent / "connect4.c", "sockops": HERE / "sockops.c", "getsockopt": HERE / "getsockopt.c"}
BUILD = HERE / "build"
# Attached in this order: the redirect last, once what answers Envoy is in place.
PROGRAMS = (("getsockopt", "mesh_getsockopt"), ("sockops", "mesh_sockops"), ("connect4", "mesh_connect4"))
STATUS_PORT = 15090


FLAGS = ["-O2", "-g", "-Wall", "-target", "bpf"]


def compile_all() -> int:
    clang = shutil.which("clang")
    if clang is None:
        print("clang is not installed: sudo apt-get install clang llvm libbpf-dev", file=sys.stderr)
        return 2
    BUILD.mkdir(exist_ok=True)
    includes = ["-I", str(HERE)]
    multiarch = sysconfig.get_config_var("MULTIARCH")  # asm/types.h lives there on Debian
    if multiarch and Path("/usr/include", multiarch).is_dir():
        includes += ["-I", f"/usr/include/{multiarch}"]
    for name, source in SOURCES.items():
        output = BUILD / f"{name}.o"
        entry = cache_dir() / inputs_key(clang, source)
        if from_cache(entry, output):
            continue
        # Relative to the lab folder, so clang's messages read `connect4.c:12:5: error: ...`.
        shown = os.path.relpath(source, Path.cwd())
        depfile = BUILD / f"{name}.d"
        proc = subprocess.run([clang, *FLAGS, *includes, "-c", shown, "-o", str(output), "-MD", "-MF", str(depfile)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            print(f"{shown} does not compile (clang's first error is at the top)", file=sys.stderr)
            return 2
        to_cache(entry, output, depfile)
    return 0


# -- a compiler cache: an unchanged program is not compiled again --------------------
#
# Each check runs `compile` (and `meshlab check --solution` in a fresh copy of the lab),
# so the objects are kept in ~/.cache/meshlab/bpf by what they were made from: the
# compiler, the flags, the source, and every header it included (clang lists them with
# -MD). An entry is found by the first three, then holds one object per content of the
# headers.

def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "meshlab" / "bpf"


def inputs_key(clang: str, source: Path) -> str:
    binary = Path(clang).resolve()
    info = binary.stat()  # a new clang is a new file
    digest = hashlib.sha256(f"{binary} {info.st_size} {info.st_mtime_ns}\0{' '.join(FLAGS)}\0".encode())
    digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def headers_digest(headers: list[str]) -> str | None:
    """The content of HEADERS (names relative to the lab folder, or absolute); None if one is gone."""
    digest = hashlib.sha256()
    for name in headers:
        try:
            digest.update(name.encode() + b"\0" + (HERE.parent / name).read_bytes() + b"\0")
        except OSError:
            return None
    return digest.hexdigest()


def from_cache(entry: Path, output: Path) -> bool:
    try:
        headers = json.loads((entry / "headers.json").read_text())
    except (OSError, ValueError):
        return False
    digest = headers_digest(headers)
    cached = entry / f"{digest}.o"
    if digest is None or not cached.is_file():
        return False
    shutil.copyfile(cached, output)
    return True


def to_cache(entry: Path, output: Path, depfile: Path) -> None:
    """Keep OUTPUT under ENTRY with the headers DEPFILE lists (make's syntax, from -MD)."""
    words = depfile.read_text().replace("\\\n", " ").split(":", 1)[1].split()
    headers = sorted({_lab_relative(word) for word in words[1:]})  # the first is the source itself
    digest = headers_digest(headers)
    if digest is None:
        return
    try:
        entry.mkdir(parents=True, exist_ok=True)
        for name, data in ((f"{digest}.o", output.read_bytes()), ("headers.json", json.dumps(headers).encode())):
            partial = entry / f".{name}.{os.getpid()}"
            partial.write_bytes(data)
            partial.replace(entry / name)  # whole or absent, even with two compiles at once
    except OSError:
        pass  # no cache, no harm: the next check compiles again


def _lab_relative(path: str) -> str:
    """PATH relative to the lab folder when it is inside it (the copy graded elsewhere has
    the same names), else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(HERE.parent))
    except ValueError:
        return str(absolute)


class Libbpf:
    """The few calls of libbpf.so.1 the loader needs."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
        pointer, text, number = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        for name, result, args in (
            ("bpf_object__open_file", pointer, [text, pointer]),
            ("bpf_object__load", number, [pointer]),
            ("bpf_object__find_map_by_name", pointer, [pointer, text]),
            ("bpf_object__find_program_by_name", pointer, [pointer, text]),
            ("bpf_map__fd", number, [pointer]),
            ("bpf_map__reuse_fd", number, [pointer, number]),
            ("bpf_program__attach_cgroup", pointer, [pointer, number]),
            ("bpf_program__fd", number, [pointer]),
        ):
            function = getattr(lib, name)
            function.restype, function.argtypes = result, args
        self.lib = lib

    def __getattr__(self, name: str):
        return getattr(self.lib, name)


def fail(what: str) -> None:
    error = ctypes.get_errno()
    sys.exit(f"{what}: {os.strerror(error) if error else 'failed'} (libbpf's log, if any, is above)")


def own_cgroup() -> Path:
    """The cgroup v2 directory this process runs in (the lab put it there)."""
    line = next(line for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
    for root in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (root / "cgroup.procs").is_file():
            return root / line[3:].lstrip("/")
    sys.exit("no cgroup v2 hierarchy is mounted")


def attach() -> None:
    bpf = Libbpf()
    cgroup = own_cgroup()
    cgroup_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    shared: dict[str, int] = {}     # map name -> fd: one copy of each map for all programs
    links, status = [], []
    for object_name, program_name in PROGRAMS:
        path = BUILD / f"{object_name}.o"
        obj = bpf.bpf_object__open_file(str(path).encode(), None)
        if not obj:
            fail(f"cannot open {path} (run `python bpf/loader.py compile`)")
        for map_name, fd in shared.items():
            found = bpf.bpf_object__find_map_by_name(obj, map_name.encode())
            if found and bpf.bpf_map__reuse_fd(found, fd) != 0:
                fail(f"cannot share map {map_name} with {object_name}")
        if bpf.bpf_object__load(obj) != 0:
            fail(f"the kernel refused {object_name}.o (the verifier's reasons are above)")
        for map_name in ("mesh_by_cookie", "mesh_by_port"):
            found = bpf.bpf_object__find_map_by_name(obj, map_name.encode())
            if found and map_name not in shared:
                shared[map_name] = bpf.bpf_map__fd(found)
        program = bpf.bpf_object__find_program_by_name(obj, program_name.encode())
        if not program:
            sys.exit(f"{object_name}.o has no program named {program_name}: keep the function's name")
        link = bpf.bpf_program__attach_cgroup(program, cgroup_fd)
        if not link:
            fail(f"cannot attach {program_name} to {cgroup}")
        links.append(link)
        status.append({"program": program_name, "fd": bpf.bpf_program__fd(program)})
    print(f"attached {', '.join(p for _, p in PROGRAMS)} to {cgroup}", file=sys.stderr, flush=True)
    serve_status({"cgroup": str(cgroup), "programs": status})


def serve_status(status: dict) -> None:
    body = json.dumps(status).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", STATUS_PORT), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "compile":
        sys.exit(compile_all())
    if command == "attach":
        attach()
    else:
        sys.exit(__doc__)
