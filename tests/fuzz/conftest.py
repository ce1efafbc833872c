"""The bad-input suite's harness: run `corl ...` the way a user does (the console entry point,
`corl.cli.main`, in this process) and judge the outcome.

Every case ends one of three ways, which the session summary counts per group (the test module):
- "error": a non-zero exit, exactly one `error:` line on stderr that names the bad input, no traceback
  and not the `unexpected error` line (which means an error corl does not know how to name: a bug);
- "ok": exit 0 with the documented behaviour, checked by the case;
- "skipped": exit 0 with the bad rows or files skipped, counted and logged (checked by the case).
A case may also protect files (a run's checkpoints and metrics): their bytes must not change.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image

from corl.cli import main
from corl.training.testing import TINY_OVERRIDES, save_tiny_policy

torch.set_num_threads(2)

_OUTCOMES: Counter[tuple[str, str]] = Counter()
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Result:
    code: int
    out: str
    err: str
    log: str
    raised: BaseException | None = None

    @property
    def text(self) -> str:
        return "\n".join((self.out, self.err, self.log))

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if "error:" in line]


@dataclass
class Fuzz:
    """What a case needs: a clean working folder, the tiny model, and the ways to run and judge."""

    tmp: Path
    model: Path
    group: str
    caplog: pytest.LogCaptureFixture
    protected: dict[Path, str] = field(default_factory=dict)

    def run(self, *argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        self.caplog.clear()
        raised, code = None, None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in argv])
            except SystemExit as exit_:  # argparse's own errors
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException as error:  # what a user would see as a traceback
                raised, code = error, 1
        return Result(code, out.getvalue(), err.getvalue(), self.caplog.text, raised)

    def train(self, recipe: str, out: Path | str, *overrides: str, resume: str | None = None) -> Result:
        """`corl train RECIPE --out OUT` on the tiny model, shrunk to seconds (corl.training.testing)."""
        argv = ["train", recipe, "--out", str(out), f"model.name_or_path={self.model}", *TINY_OVERRIDES, *overrides]
        if resume is not None:
            argv += ["--resume"] if resume == "auto" else ["--resume-from", resume]
        return self.run(*argv)

    def write(self, name: str, data: str | bytes) -> Path:
        """A file under the case's folder (parents made)."""
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
        return path

    @staticmethod
    def png(seed: int = 0, size: int = 24) -> bytes:
        """A real PNG of random pixels (random, so its compressed stream is long enough to cut short)."""
        pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        return buffer.getvalue()

    def protect(self, *paths: Path) -> None:
        """Files (or every file below a folder) whose bytes the case must leave as they are."""
        for path in paths:
            for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
                self.protected[file] = hashlib.sha256(file.read_bytes()).hexdigest()

    def _check_protected(self) -> None:
        for file, digest in self.protected.items():
            assert file.is_file(), f"{file} was removed"
            assert hashlib.sha256(file.read_bytes()).hexdigest() == digest, f"{file} was changed"

    def _no_traceback(self, result: Result) -> None:
        if result.raised is not None:
            raise AssertionError(f"a traceback escaped: {type(result.raised).__name__}: {result.raised}") \
                from result.raised
        assert TRACEBACK not in result.text
        assert "unexpected error" not in result.err, result.err

    def error(self, *argv: str, names: str | tuple[str, ...]) -> Result:
        """Run and require a clear error: non-zero exit, one `error:` line naming every string of `names`."""
        return self.expect_error(self.run(*argv), names)

    def expect_error(self, result: Result, names: str | tuple[str, ...]) -> Result:
        self._no_traceback(result)
        assert result.code != 0, f"exit 0 where an error was due; output:\n{result.text[-2000:]}"
        lines = result.error_lines
        assert len(lines) == 1, f"expected one error line, got {lines}\n{result.err[-2000:]}"
        for name in (names,) if isinstance(names, str) else names:
            assert name in lines[0], f"the error does not name {name!r}: {lines[0]}"
        self._check_protected()
        _OUTCOMES[(self.group, "error")] += 1
        return result

    def ok(self, *argv: str) -> Result:
        return self.expect_ok(self.run(*argv))

    def expect_ok(self, result: Result, outcome: str = "ok") -> Result:
        self._no_traceback(result)
        assert result.code == 0, f"exit {result.code}; output:\n{result.text[-3000:]}"
        self._check_protected()
        _OUTCOMES[(self.group, outcome)] += 1
        return result

    def record(self, outcome: str) -> None:
        """Count a case the test judged itself (one that cannot run through `run`)."""
        _OUTCOMES[(self.group, outcome)] += 1

    def skipped(self, result: Result, *words: str) -> Result:
        """Exit 0, and the log names what was skipped (each of `words`)."""
        self.expect_ok(result, outcome="skipped")
        for word in words:
            assert word in result.text, f"the output does not mention {word!r}"
        return result


@pytest.fixture(scope="session")
def fuzz_model(tmp_path_factory) -> Path:
    return save_tiny_policy(tmp_path_factory.mktemp("fuzz-model") / "tiny")


@pytest.fixture
def fuzz(request, tmp_path, monkeypatch, caplog, fuzz_model) -> Fuzz:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORL_CACHE", str(tmp_path.parent / "corl-cache"))  # the Shapes rows, built once
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a case must never reach the network: the variable for
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # subprocesses, the constant here
    caplog.set_level(logging.INFO)
    group = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    return Fuzz(tmp_path, fuzz_model, group, caplog)


def pytest_terminal_summary(terminalreporter) -> None:
    if not _OUTCOMES:
        return
    groups = sorted({g for g, _ in _OUTCOMES})
    kinds = ("error", "ok", "skipped")
    lines = [f"{'group':<14}" + "".join(f"{k:>9}" for k in kinds) + f"{'total':>9}"]
    for g in groups:
        counts = [_OUTCOMES[(g, k)] for k in kinds]
        lines.append(f"{g:<14}" + "".join(f"{c:>9}" for c in counts) + f"{sum(counts):>9}")
    totals = [sum(_OUTCOMES[(g, k)] for g in groups) for k in kinds]
    lines.append(f"{'all':<14}" + "".join(f"{c:>9}" for c in totals) + f"{sum(totals):>9}")
    terminalreporter.write_sep("-", "bad-input suite: passed cases per group and outcome")
    for line in lines:
        terminalreporter.write_line(line)
