"""Bad command lines, one per case: every command refuses a wrong flag value in one line naming the flag,
before it loads anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

IMAGE_FLAGS = ("--model", "{model}")

ERRORS = [
    (["frobnicate"], "frobnicate"),
    (["train"], "required"),
    (["train", "shapes-tiny/t2i"], "--out"),
    (["train", "no/such", "--out", "o"], "no/such"),
    (["train", "shapes-tiny/t2i", "--out", "o", "--frobnicate"], "--frobnicate"),
    (["generate"], "--prompt"),
    (["generate", "--prompt", "", *IMAGE_FLAGS], "--prompt"),
    (["generate", "--prompt", "   ", *IMAGE_FLAGS], "--prompt"),
    (["generate", "--prompt", "x", "-n", "0", *IMAGE_FLAGS], "--images-per-prompt"),
    (["generate", "--prompt", "x", "-n", "-2", *IMAGE_FLAGS], "--images-per-prompt"),
    (["generate", "--prompt", "x", "-n", "two", *IMAGE_FLAGS], "--images-per-prompt"),
    (["generate", "--prompt", "x", "--temperature", "0", *IMAGE_FLAGS], "--temperature"),
    (["generate", "--prompt", "x", "--temperature", "-1", *IMAGE_FLAGS], "--temperature"),
    (["generate", "--prompt", "x", "--cfg", "nan", *IMAGE_FLAGS], "--cfg"),
    (["generate", "--prompt", "x", "--cfg", "inf", *IMAGE_FLAGS], "--cfg"),
    (["generate", "--prompt", "x", "--top-k", "0", *IMAGE_FLAGS], "--top-k"),
    (["generate", "--prompt", "x", "--dtype", "float8", *IMAGE_FLAGS], "float8"),
    (["generate", "--prompt", "x", "--device", "tpu", *IMAGE_FLAGS], "tpu"),
    (["generate", "--prompt", "x", "--device", "cuda:7", *IMAGE_FLAGS], "cuda:7"),
    (["answer", "--image", "missing.png", "--question", "q", *IMAGE_FLAGS], "missing.png"),
    (["answer", "--image", "{tmp}", "--question", "q", *IMAGE_FLAGS], "{tmp}"),
    (["answer", "--image", "x.png", "--question", "", *IMAGE_FLAGS], "--question"),
    (["answer", "--image", "x.png", "--question", "q", "--max-new-tokens", "0", *IMAGE_FLAGS], "--max-new-tokens"),
    (["eval", "--out", "e.json", "--max-rows", "-1"], "--max-rows"),
    (["eval", "--out", "e.json", "--batch-size", "0"], "--batch-size"),
    (["eval", "--out", "e.json", "--images-per-prompt", "0"], "--images-per-prompt"),
    (["eval", "--out", "e.json", "--suite", "imagenet"], "--suite"),
    (["plan", "no/such"], "no/such"),
    (["plan", "shapes-tiny/t2i", "--gpus", "0"], "--gpus"),
    (["plan", "shapes-tiny/t2i", "--gpu-memory", "-5"], "--gpu-memory"),
    (["merge", "--a", "/nonexistent/a", "--b", "/nonexistent/b", "--out", "m"], "/nonexistent/a"),
    (["merge", "--a", "{model}", "--b", "{model}", "--out", "m", "--alpha", "2"], "alpha"),
    (["merge", "--a", "{model}", "--b", "{model}", "--out", "m", "--method", "gaussian"], "--base"),
    (["config", "show", "no/such"], "no/such"),
    (["shapes", "build", "--out", "s", "--n-train", "-1"], "--n-train"),
    (["shapes", "build", "--out", "s", "--image-size", "0"], "--image-size"),
    (["shapes", "show", "--data", "/nonexistent/shapes"], "/nonexistent/shapes"),
    (["demo", "--max-rows", "-1"], "--max-rows"),
    (["demo", "--stages", "unified,frobnicate"], "frobnicate"),
    (["pilot", "--steps", "0"], "--steps"),
    (["pilot", "--arms", "frobnicate"], "frobnicate"),
    (["reproduce", "no/such", "--out", "r"], "no/such"),
    (["prefetch", "no/such"], "no/such"),
]


@pytest.mark.parametrize(("argv", "names"), ERRORS, ids=[" ".join(a)[:60] for a, _ in ERRORS])
def test_bad_command_line_is_one_clear_line(fuzz, argv, names):
    fill = {"model": str(fuzz.model), "tmp": str(fuzz.tmp)}
    fuzz.error(*[a.format(**fill) for a in argv], names=names.format(**fill))
    assert not (fuzz.tmp / "o").exists() and not (fuzz.tmp / "m").exists()  # nothing half-made


def test_no_command_prints_the_help(fuzz):
    result = fuzz.run()
    assert result.code == 2 and "usage: corl" in result.out and "Traceback" not in result.text
    fuzz.record("ok")


def test_debug_after_the_subcommand_shows_the_traceback(fuzz):
    result = fuzz.run("train", "no/such", "--out", "o", "--debug")
    assert isinstance(result.raised, FileNotFoundError)  # --debug: the exception is not swallowed
    fuzz.record("ok")


def test_non_utf8_argument_is_named(fuzz, tmp_path):
    """Bytes that are not UTF-8 arrive from the shell as lone surrogates: refused in one line."""
    result = subprocess.run([sys.executable, "-m", "corl.cli", "generate", "--prompt", b"caf\xe9".decode(
        "utf-8", "surrogateescape"), "-n", "1"], capture_output=True, text=True, errors="replace", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "not valid UTF-8" in result.stderr
    assert "caf\\xe9" in result.stderr and "Traceback" not in result.stderr
    fuzz.record("error")
