"""The instructor's decks, built and presented as a room without network would see them.

Every deck in slides/ is rendered with `meshlab slides build` and loaded in headless
Chromium whose resolver knows no host but 127.0.0.1: reveal.js must initialise, every
deck must hold a diagram (Mermaid, drawn to SVG by the build), no request or script may
fail, no code line may run past its block,
and the speaker notes must be there. The demo decks (labs 01-03 and 06: each starts its lab's
solution and sends real load) are built with --execute inside a network namespace, and
their pictures must be in the page.

Needs the `slides` extra and Chromium (.ci/run installs both); skipped without them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshlab import isolation
from meshlab.course import load_course

pytest.importorskip("nbconvert")
pytest.importorskip("jupytext")
pytest.importorskip("playwright")

from meshlab import slides  # noqa: E402 - after the skips

ROOT = Path(__file__).resolve().parents[1]
# The decks whose demo cells run here: every deck that has code cells.
DEMO_DECKS = sorted(n for n, _, path in slides.decks(load_course(ROOT))
                    if any(c.cell_type == "code" for c in slides.read_deck(path).cells))

pytestmark = [pytest.mark.skipif(not any(map(__import__("shutil").which, slides.CHROMIUM_CANDIDATES)),
                                 reason="Chromium is not installed"),
              pytest.mark.xdist_group("slides")]


def build(out: Path, *args: str, isolate: bool = False) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "meshlab", "slides", "build", "-o", str(out), *args]
    if isolate:
        argv = isolation.wrap(argv)
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MESHLAB_ROOT": str(ROOT)})


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("decks")
    run = build(out)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


@pytest.fixture(scope="module")
def executed(tmp_path_factory, built) -> Path:  # built first: it fills the npm cache
    if not isolation.available():
        pytest.skip("demo decks use the labs' own ports: they run in a network namespace")
    out = tmp_path_factory.mktemp("demos")
    run = build(out, "--execute", *map(str, DEMO_DECKS), isolate=True)
    assert run.returncode == 0, run.stdout + run.stderr
    return out


@pytest.fixture(scope="module")
def chromium():
    with slides.browser(offline=True) as browser:
        yield browser


def present(chromium, folder: Path, page_name: str, *, query: str = "") -> dict:
    """Open a deck from FOLDER as the room would, and report what the page did."""
    failed: list[str] = []
    errors: list[str] = []
    with slides.serving(folder) as base:
        page = chromium.new_page(viewport={"width": 1280, "height": 800})
        page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
        page.on("response", lambda r: failed.append(f"{r.url}: {r.status}") if r.status >= 400 else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        try:
            page.goto(f"{base}/{page_name}{query}", wait_until="load")
            slides.wait_until_ready(page)
            report = page.evaluate("""() => ({
                slides: document.querySelectorAll('.reveal .slides section').length,
                notes: document.querySelectorAll('aside.notes').length,
                diagrams: document.querySelectorAll('.jp-Mermaid svg').length,
                images: [...document.querySelectorAll('.jp-OutputArea-output img')]
                          .filter(img => img.naturalWidth > 100).length,
                demo_errors: [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], .jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]')].length,
                title: (document.querySelector('.reveal h1') || {}).textContent || '',
                cut: [...document.querySelectorAll('.reveal pre')]
                       .filter(pre => pre.scrollWidth > pre.clientWidth + 1)
                       .map(pre => pre.textContent.split('\\n').sort((a, b) => b.length - a.length)[0]),
            })""")
            report["failed"], report["errors"] = list(failed), list(errors)
            # Proof that the room had no network: a CDN is unreachable from this page.
            report["offline_host_blocked"] = page.evaluate(
                "() => fetch('https://unpkg.com/reveal.js').then(() => 'fetched', () => 'blocked')")
        finally:
            page.close()
    return report


DECKS = [name for _, name, _ in slides.decks(load_course(ROOT))]


@pytest.mark.parametrize("name", DECKS)
def test_every_deck_presents_offline(chromium, built, name):
    report = present(chromium, built, f"{name}.slides.html")
    assert report["offline_host_blocked"] == "blocked"      # the room really had no network
    assert report["failed"] == [] and report["errors"] == [], (report["failed"], report["errors"])
    assert report["slides"] >= 5 and report["notes"] >= 2, report
    assert report["diagrams"] >= 1, "every deck has a diagram of its data path"
    assert report["title"].startswith("Lab ") or name.startswith("00-"), report["title"]


@pytest.mark.parametrize("name", DECKS)
def test_no_code_line_is_cut_off(chromium, built, name):
    # print-pdf lays every slide out at once, so every block has its real width.
    report = present(chromium, built, f"{name}.slides.html", query="?print-pdf")
    assert report["cut"] == [], f"lines running past the slide's code block: {report['cut']}"


def test_the_build_folder_names_no_remote_url(built):
    for page in built.glob("*.slides.html"):
        text = page.read_text()
        for remote in ("https://unpkg.com", "cdnjs.cloudflare.com", "cdn.jsdelivr.net", "https://fonts."):
            assert remote not in text, (page.name, remote)


def test_the_demo_decks_execute_against_the_real_labs(chromium, executed):
    assert set(DEMO_DECKS) >= {1, 2, 3, 6}, "labs 01-03 and 06 have live demos"
    for number in DEMO_DECKS:
        (page,) = executed.glob(f"{number:02d}-*.slides.html")
        report = present(chromium, executed, page.name)
        assert report["failed"] == [] and report["errors"] == [], report
        assert report["images"] >= 1, f"{page.name}: the demo drew no picture"
        assert report["demo_errors"] == 0, f"{page.name}: a demo cell wrote an error"


def test_a_pdf_handout(tmp_path):
    run = build(tmp_path, "--pdf", "0")
    assert run.returncode == 0, run.stdout + run.stderr
    (pdf,) = tmp_path.glob("00-*.pdf")
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 20_000


def test_serve_serves_the_build_and_its_speaker_view(built):
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "meshlab", "slides", "serve", "-o", str(built), "--port", str(port)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/02-canary.slides.html", trust_env=False)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, server.stdout.read()
                time.sleep(0.2)
        assert page.status_code == 200 and "vendor/reveal.js/plugin/notes/notes.js" in page.text
        notes = httpx.get(f"http://127.0.0.1:{port}/vendor/reveal.js/plugin/notes/notes.js", trust_env=False)
        assert notes.status_code == 200 and "speaker" in notes.text.lower()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_deck_that_does_not_exist_and_an_empty_build_are_exit_2(cli, tmp_path):
    run = cli("slides", "build", "42", "-o", str(tmp_path / "out"))
    assert run.code == 2 and "no deck for 42" in run.output and "fix:" in run.output
    run = cli("slides", "serve", "-o", str(tmp_path / "empty"))
    assert run.code == 2 and "meshlab slides build" in run.output
