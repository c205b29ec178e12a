"""Lab 10 graded for real: the starter fails, the solution passes, filters that only look
right fail the checks they should, an unusual correct one passes, and a compile error
is reported at its line (exit 2). Every variant is compiled by the lab's own build.py
(identical sources are compiled once per machine: build.py caches by content hash)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lab_variants import fails_only, passes

pytestmark = [
    pytest.mark.lab_runs,
    pytest.mark.skipif(not any(shutil.which(r) for r in ("rustc", "/usr/bin/rustc")),
                       reason="needs rustc with the wasm32-unknown-unknown target"),
]

ROOT = Path(__file__).resolve().parents[1]
FILTER = (ROOT / "solutions" / "10-wasm" / "filter.rs").read_text()
CHECKS = {
    "test_text_bodies_masked", "test_only_luhn_numbers", "test_count_trailer", "test_split_across_chunks",
    "test_content_length_bodies", "test_binary_untouched", "test_over_the_limit", "test_loaded_without_panic",
}


def rust(*edits: tuple[str, str]) -> dict[str, str]:
    text = FILTER
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    return {"filter.rs": text}


# -- plausible but wrong ------------------------------------------------------------

def test_masking_each_chunk_as_it_comes(grade):
    # No Pause: each chunk is masked alone, so a number cut in two leaks and a large body
    # streams out unmasked. (This filter adds no trailer: one that let chunks through and
    # then adds a trailer gets BadArgument from Envoy and panics, which fails everything.)
    files = rust(("        if !end_of_stream {\n            return Action::Pause;\n        }\n", ""),
                 ('        self.add_http_response_trailer("x-pii-masked", &count.to_string());\n', ""),
                 ("let (masked, count) = mask(&body);", "let (masked, _count) = mask(&body);"))
    checks = fails_only(grade, 10, files, {"test_split_across_chunks", "test_count_trailer", "test_over_the_limit"})
    assert "4111111111111111" in checks["test_split_across_chunks"]["received"]
    assert "readable card numbers" in checks["test_over_the_limit"]["message"]


def test_masking_without_luhn(grade):
    checks = fails_only(grade, 10, rust(("(13..=19).contains(&run.len()) && luhn(run)", "(13..=19).contains(&run.len())")),
                        {"test_only_luhn_numbers"})
    assert "4111111111111112" in checks["test_only_luhn_numbers"]["hint"]


def test_keeping_content_length(grade):
    checks = fails_only(grade, 10, rust(('            self.set_http_response_header("content-length", None);\n', "")),
                        {"test_content_length_bodies"})
    assert "content-length: 96" in checks["test_content_length_bodies"]["received"]


def test_the_count_as_a_header_after_the_body_panics(grade):
    # The classic: headers are gone when the body callback runs; Envoy refuses the
    # change (BadArgument), the method panics like the crate's, and the VM is dead.
    code, checks, data = grade(10, files=rust(
        ('self.add_http_response_trailer("x-pii-masked", &count.to_string());',
         'self.set_http_response_header("x-pii-masked", Some(&count.to_string()));')))
    assert code == 1 and {cid for cid, c in checks.items() if c["status"] == "fail"} == CHECKS, data
    panic = checks["test_loaded_without_panic"]
    assert "panicked at" in panic["received"] and "BadArgument" in panic["received"]
    assert "proxy_wasm/traits.rs" in panic["received"]  # paths relative to the lab folder
    assert "503" in checks["test_binary_untouched"]["received"]
    # The dead VM's 503s are named as such, not blamed on Luhn, the trailer or the content type.
    for cid in ("test_only_luhn_numbers", "test_content_length_bodies", "test_binary_untouched",
                "test_over_the_limit"):
        assert "503" in checks[cid]["received"] and "panic" in checks[cid]["hint"], checks[cid]


def test_a_content_type_test_that_compares_the_whole_header(grade):
    # A list of exact types: `text/plain; charset=utf-8` is not taken for text, and its
    # bodies pass unmasked. The module still masks bare application/json, so the panic
    # check has a body its code ran on, and passes: it blames no panic for what the
    # masking checks report.
    code, checks, data = grade(10, files=rust((
        "    let media = content_type.split(';').next().unwrap_or(\"\").trim().to_ascii_lowercase();\n"
        "    media.starts_with(\"text/\") || media == \"application/json\" || media.ends_with(\"+json\")",
        "    let media = content_type.trim().to_ascii_lowercase();\n"
        "    media == \"text/plain\" || media == \"text/html\" || media == \"application/json\"")))
    assert code == 1 and checks["test_text_bodies_masked"]["status"] == "fail", data
    assert "text/plain; charset=utf-8" in checks["test_text_bodies_masked"]["message"], checks["test_text_bodies_masked"]
    assert checks["test_loaded_without_panic"]["status"] == "pass", checks["test_loaded_without_panic"]


# -- unusual but correct ------------------------------------------------------------

def test_an_http_context_factory_and_a_stricter_content_type_parser(grade):
    files = rust(
        ("    proxy_wasm::set_root_context(|_context_id| -> Box<dyn RootContext> { Box::new(PiiRoot) });",
         "    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(PiiMask { inspect: false }) });"),
        ("    let media = content_type.split(';').next().unwrap_or(\"\").trim().to_ascii_lowercase();\n"
         "    media.starts_with(\"text/\") || media == \"application/json\" || media.ends_with(\"+json\")",
         "    let media = content_type.to_ascii_lowercase();\n"
         "    let media = media.split(';').next().unwrap_or(\"\").trim();\n"
         "    let (kind, sub) = media.split_once('/').unwrap_or((\"\", \"\"));\n"
         "    kind == \"text\" || (kind == \"application\" && (sub == \"json\" || sub.ends_with(\"+json\")))"),
    )
    passes(grade, 10, files)


# -- a broken filter ----------------------------------------------------------------

def test_a_compile_error_is_reported_at_its_line(grade):
    broken = FILTER.replace("let (masked, count) = mask(&body);", "let (masked, count) = mask(body);")
    text = next(t for t in broken.splitlines() if "mask(body);" in t)
    line, column = broken.splitlines().index(text) + 1, text.index("body);") + 1
    code, checks, data = grade(10, files={"filter.rs": broken})
    assert code == 2 and not checks, data
    error = data["error"]
    assert error["kind"] == "input" and error["where"].endswith(f"filter.rs:{line}:{column}"), error
    assert "mismatched types" in error["details"] and "error[E0308]" in error["details"], error


# -- the build ----------------------------------------------------------------------

def test_an_unchanged_filter_is_not_compiled_again(tmp_path: Path, monkeypatch):
    import subprocess
    import sys

    lab = tmp_path / "lab"
    shutil.copytree(ROOT / "labs" / "10-wasm", lab, ignore=shutil.ignore_patterns("build"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # no shared cache: a real first build

    def build() -> str:
        done = subprocess.run([sys.executable, "build.py"], cwd=lab, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert build().startswith("built build/filter.wasm")
    wasm = lab / "build" / "filter.wasm"
    assert wasm.read_bytes()[:4] == b"\0asm" and b"proxy_abi_version_0_2_1" in wasm.read_bytes()
    first = wasm.stat().st_mtime_ns
    assert build() == "build/filter.wasm is up to date" and wasm.stat().st_mtime_ns == first
    (lab / "filter.rs").write_text((lab / "filter.rs").read_text() + "\n// changed\n")
    assert build().startswith("built build/filter.wasm") and wasm.stat().st_mtime_ns != first
