"""The instructor's decks: jupytext Markdown notebooks in slides/, built into reveal.js.

    build(course, out)                every deck, as DIR/NN-slug.slides.html + DIR/vendor/
    build(course, out, numbers=[2], execute=True, pdf=True)

A deck is a notebook kept as Markdown (jupytext), with reveal.js metadata on its cells
(slide, subslide, fragment, notes). Building executes its demo cells when asked (they
drive a real lab through `meshlab.demo`), renders it with nbconvert's slides exporter,
and copies the browser side next to it: reveal.js, require.js, jQuery and MathJax 2,
fetched once through the npm registry (`npm pack`, pinned versions) and kept in a
cache. The decks name only these local copies, never a CDN, so a build folder on a
laptop presents in a room without network. Mermaid diagrams are drawn to SVG at build
time, in headless Chromium: drawn in the room, they raced reveal.js, which hides the
slides Mermaid measures. `--pdf` prints each deck to a handout the same way.

The deck tools are an optional extra (`pip install -e '.[slides]'`); a missing one is a
ToolMissing error naming the install command, not an ImportError.
"""

from __future__ import annotations

import contextlib
import functools
import html
import http.server
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from meshlab.course import Course
from meshlab.errors import InputError, ToolMissing

# npm package -> (version, files to keep, the folder name in vendor/). Pinned: the
# template is written for reveal.js 4/5 (reveal.js 6 moved the notes plugin) and calls
# MathJax 2's API.
VENDOR = {
    "reveal.js": ("5.2.1", ("dist/", "plugin/notes/"), "reveal.js"),
    "requirejs": ("2.3.7", ("require.js",), "requirejs"),
    "jquery": ("3.7.1", ("dist/jquery.min.js",), "jquery"),
    "mathjax": ("2.7.9", ("MathJax.js", "config/TeX-AMS_CHTML-full.js", "extensions/", "jax/input/TeX/",
                          "jax/output/CommonHTML/", "jax/element/", "fonts/HTML-CSS/TeX/woff/", "localization/en/"),
                "mathjax"),
    "mermaid": ("10.9.8", ("dist/mermaid.min.js",), "mermaid"),
}
BUILD_TIME_ONLY = {"mermaid"}   # used to draw diagrams while building, not shipped
MERMAID_BLOCK = re.compile(r'<div class="jp-Mermaid"><pre class="mermaid">\n(.*?)\n</pre></div>', re.S)
TEMPLATE_DIR = Path(__file__).parent / "slides_template"
INSTALL_HINT = "pip install -e '.[slides]' (jupytext, nbconvert, nbclient, ipykernel, matplotlib, playwright)"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DEMO_TIMEOUT_S = 300   # one demo cell: a lab starts, load runs


@dataclass
class Built:
    number: int
    slug: str
    html: Path
    pdf: Path | None = None
    executed: bool = False


def decks(course: Course, numbers: list[int] | None = None) -> list[tuple[int, str, Path]]:
    """(number, name, path) of each deck in slides/, in order; 0 is the opening deck."""
    found = []
    for path in sorted((course.root / "slides").glob("[0-9][0-9]-*.md")):
        found.append((int(path.name[:2]), path.stem, path))
    if numbers:
        missing = sorted(set(numbers) - {n for n, _, _ in found})
        if missing:
            raise InputError(f"no deck for {', '.join(f'{n:02d}' for n in missing)} in slides/",
                             fix="the decks are: " + ", ".join(f"{n:02d}" for n, _, _ in found))
        found = [deck for deck in found if deck[0] in numbers]
    return found


def cache_dir() -> Path:
    base = os.environ.get("MESHLAB_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME")
                                                          or os.path.expanduser("~/.cache"), "meshlab")
    return Path(base) / "npm"


def cached(package: str, *, on_fetch: Callable[[str], None] | None = None) -> Path:
    """The cached copy of PACKAGE's kept files, fetched first if the cache lacks it."""
    version, keep, _ = VENDOR[package]
    folder = cache_dir() / f"{package}-{version}"
    if not folder.is_dir():
        if on_fetch:
            on_fetch(f"{package}@{version}")
        _fetch(package, version, keep, folder)
    return folder


def vendor(dest: Path, *, on_fetch: Callable[[str], None] | None = None) -> Path:
    """Copy the pinned browser libraries into DEST (fetching any the cache lacks)."""
    dest.mkdir(parents=True, exist_ok=True)
    for package, (_, _, folder) in VENDOR.items():
        source = cached(package, on_fetch=on_fetch)
        if package not in BUILD_TIME_ONLY and not (dest / folder).is_dir():
            shutil.copytree(source, dest / folder)
    return dest


def _fetch(package: str, version: str, keep: tuple[str, ...], cached: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ToolMissing("npm is needed once to fetch reveal.js and the other slide libraries",
                          fix="install Node.js and npm (Debian: apt-get install npm), or copy a "
                              f"filled cache to {cache_dir()}")
    with tempfile.TemporaryDirectory() as scratch:
        run = subprocess.run([npm, "pack", f"{package}@{version}", "--silent", "--pack-destination", scratch],
                             capture_output=True, text=True, timeout=300)
        tarballs = list(Path(scratch).glob("*.tgz"))
        if run.returncode != 0 or not tarballs:
            raise ToolMissing(f"npm could not fetch {package}@{version}: {run.stderr.strip()[-300:]}",
                              fix="check the machine's access to the npm registry (npm config get registry)")
        partial = cached.with_name(cached.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers() if m.isfile()
                       and any(m.name.removeprefix("package/").startswith(k) for k in keep)]
            for member in members:
                member.name = member.name.removeprefix("package/")
            tar.extractall(partial, members=members, filter="data")
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial.rename(cached)  # a complete copy or none: an interrupted fetch leaves no half cache


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ToolMissing(f"building decks needs the Python package {module}", fix=INSTALL_HINT) from None


def read_deck(path: Path):
    jupytext = _require("jupytext")
    return jupytext.read(path)


def execute(notebook, *, cwd: Path) -> None:
    """Run every code cell of NOTEBOOK in a fresh kernel in CWD; a failing cell is an InputError."""
    _require("nbclient")
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from jupyter_client.manager import KernelManager

    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    # Unix sockets, not TCP on loopback: nothing else on the machine can talk to the
    # kernel. They are made where `ip` points, so in a folder of their own.
    with tempfile.TemporaryDirectory(prefix="meshlab-kernel-") as sockets:
        kernel = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
        client = NotebookClient(notebook, km=kernel, timeout=DEMO_TIMEOUT_S, kernel_name="python3",
                                resources={"metadata": {"path": str(cwd)}})
        try:
            client.execute()  # a kernel it did not make, nbclient leaves running: stopped below
        except CellExecutionError as error:
            raise InputError(f"a demo cell failed: {str(error).strip().splitlines()[-1]}",
                             details=str(error)[-3000:],
                             fix="run the deck in Jupyter to see the cell (jupytext --to ipynb), "
                                 "or build without --execute") from None
        finally:
            if kernel.has_kernel:
                kernel.shutdown_kernel(now=False)


def render(notebook, name: str) -> str:
    """NOTEBOOK as a reveal.js page that names only files under vendor/."""
    _require("nbconvert")
    from nbconvert import SlidesExporter

    exporter = SlidesExporter(
        extra_template_basedirs=[str(TEMPLATE_DIR.parent)], template_name=TEMPLATE_DIR.name,
        reveal_url_prefix="vendor/reveal.js", reveal_theme="white", reveal_transition="none",
        reveal_number="c/t", require_js_url="vendor/requirejs/require.js",
        jquery_url="vendor/jquery/dist/jquery.min.js",
        mathjax_url="vendor/mathjax/MathJax.js?config=TeX-AMS_CHTML-full",
    )
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": name}})
    return body


def build(course: Course, out: Path, *, numbers: list[int] | None = None, run_demos: bool = False,
          pdf: bool = False, on_step: Callable[[str], None] | None = None) -> list[Built]:
    """Build the decks NUMBERS (all when None) into OUT; see the module's docstring."""
    say = on_step or (lambda text: None)
    chosen = decks(course, numbers)
    out.mkdir(parents=True, exist_ok=True)
    vendor(out / "vendor", on_fetch=lambda what: say(f"fetching {what} from the npm registry (once)"))
    built: list[Built] = []
    pages: dict[Path, str] = {}
    for number, name, path in chosen:
        notebook = read_deck(path)
        demos = any(cell.cell_type == "code" for cell in notebook.cells)
        if run_demos and demos:
            say(f"{name}: running its demos")
            execute(notebook, cwd=course.root)
        target = out / f"{name}.slides.html"
        pages[target] = render(notebook, name)
        built.append(Built(number, name, target, executed=run_demos and demos))
    with contextlib.ExitStack() as stack:
        chromium = None
        if pdf or any(MERMAID_BLOCK.search(page) for page in pages.values()):
            chromium = stack.enter_context(browser())
        for deck in built:
            page = pages[deck.html]
            if MERMAID_BLOCK.search(page):
                page = draw_diagrams(chromium, page, deck.slug)
            deck.html.write_text(page, encoding="utf-8")
            say(f"{deck.slug}: {deck.html.name}")
        if pdf:
            base = stack.enter_context(serving(out))
            for deck in built:
                deck.pdf = deck.html.with_suffix("").with_suffix(".pdf")
                print_pdf(chromium, f"{base}/{deck.html.name}", deck.pdf)
                say(f"{deck.slug}: {deck.pdf.name}")
    return built


def draw_diagrams(chromium, page: str, prefix: str) -> str:
    """PAGE with each Mermaid block replaced by the SVG Mermaid draws for it."""
    tab = chromium.new_page()
    try:
        tab.set_content("<!doctype html><html><body></body></html>")
        tab.add_script_tag(path=str(cached("mermaid") / "dist" / "mermaid.min.js"))
        tab.evaluate("() => mermaid.initialize({ startOnLoad: false, theme: 'neutral' })")
        drawn = []
        for index, match in enumerate(MERMAID_BLOCK.finditer(page)):
            try:
                drawn.append(tab.evaluate("async ([id, code]) => (await mermaid.render(id, code)).svg",
                                          [f"diagram-{prefix}-{index}", html.unescape(match.group(1))]))
            except Exception as error:  # playwright's Error: Mermaid's own message on a syntax error
                raise InputError(f"{prefix}: diagram {index + 1} is not valid Mermaid: "
                                 f"{str(error).splitlines()[0]}", fix="check it at the deck's mermaid block") from None
    finally:
        tab.close()
    svgs = iter(drawn)
    return MERMAID_BLOCK.sub(lambda m: f'<div class="jp-Mermaid">{next(svgs)}</div>', page)


@contextlib.contextmanager
def serving(folder: Path, port: int = 0) -> Iterator[str]:
    """FOLDER over HTTP on 127.0.0.1 for the block (Mermaid and the speaker view want a
    web origin, not file://); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass


def chromium_path() -> str:
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise ToolMissing("printing decks to PDF needs Chromium",
                      fix="install it (Debian: apt-get install chromium; macOS: a Chrome install)")


@contextlib.contextmanager
def browser(*, offline: bool = True):
    """Headless Chromium through playwright, with every host but 127.0.0.1 unresolvable
    when OFFLINE (what a room without network does to a deck that needs one)."""
    _require("playwright")
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    if offline:
        args.append("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=args)
        try:
            yield chromium
        finally:
            chromium.close()


def wait_until_ready(page, timeout_ms: float = 30_000) -> None:
    """reveal.js initialised."""
    page.wait_for_selector(".reveal.ready", state="attached", timeout=timeout_ms)


def print_pdf(chromium, url: str, dest: Path) -> None:
    page = chromium.new_page()
    try:
        page.goto(url + "?print-pdf", wait_until="load")
        wait_until_ready(page)
        page.pdf(path=str(dest), width="960px", height="700px", print_background=True)
    finally:
        page.close()
