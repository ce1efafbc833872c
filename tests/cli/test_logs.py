"""The command line's logging (corl/cli/logs.py): lines written through tqdm, rank-aware levels, the
libraries' bars and handlers configured only once a command imports them, and `corl --help` importing
none of the heavy libraries. Each case runs in a fresh interpreter: logging and sys.modules are global."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "transformers", "datasets", "pandas", "pyarrow", "accelerate", "numpy",
         "matplotlib", "tqdm")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k not in {"RANK", "LOCAL_RANK", "WORLD_SIZE", "HF_HUB_DISABLE_PROGRESS_BARS",
                                "HF_DATASETS_DISABLE_PROGRESS_BARS"}}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=environment | env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("how", ["build_parser()", "main(['--help'])", "main(['train', '--help'])"])
def test_the_parser_imports_no_heavy_library(how):
    done = run_python(f"""
        import json, sys
        import corl.cli
        corl.cli.{how}
        print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})), file=sys.stderr)
    """)
    assert json.loads(done.stderr.strip().splitlines()[-1]) == []


LOG_LINES = """
    import logging
    from corl.cli.logs import setup_logging
    setup_logging({verbose})
    log = logging.getLogger("corl.test")
    log.debug("debug line"); log.info("info line"); log.warning("warning line")
"""


def test_rank_zero_logs_info_and_other_ranks_warnings_with_their_rank():
    alone = run_python(LOG_LINES.format(verbose=False)).stderr
    assert "INFO corl.test: info line" in alone and "debug line" not in alone and "[rank" not in alone
    first = run_python(LOG_LINES.format(verbose=False), RANK="0", WORLD_SIZE="2").stderr
    assert "[rank 0] INFO corl.test: info line" in first
    other = run_python(LOG_LINES.format(verbose=False), RANK="1", WORLD_SIZE="2").stderr
    assert "info line" not in other and "[rank 1] WARNING corl.test: warning line" in other
    verbose = run_python(LOG_LINES.format(verbose=True), LOCAL_RANK="1", WORLD_SIZE="2").stderr
    assert "[rank 1] DEBUG corl.test: debug line" in verbose and "[rank 1] INFO" in verbose


def test_log_lines_go_through_tqdm_write():
    """tqdm.write lifts the bars, prints the line and redraws them: a line never lands inside a bar."""
    done = run_python("""
        import logging, sys
        from tqdm import tqdm
        from corl.cli.logs import setup_logging
        setup_logging(False)
        written = []
        tqdm.write = classmethod(lambda cls, s, file=None, end="\\n", nolock=False: written.append(s))
        logging.getLogger("corl.test").info("through tqdm")
        print(written, file=sys.stderr)
    """)
    assert "through tqdm" in done.stderr.splitlines()[-1]


LIBRARIES = """
    import json, logging, sys
    from corl.cli.logs import setup_logging
    setup_logging({verbose})
    assert "transformers" not in sys.modules  # configured on import, never imported for it
    import transformers.utils.logging as transformers_logging
    import datasets
    hub = sys.modules["huggingface_hub.utils.tqdm"]
    print(json.dumps({{
        "transformers_bars": transformers_logging.is_progress_bar_enabled(),
        "datasets_bars": not sys.modules["datasets.utils.tqdm"].are_progress_bars_disabled(),
        "hub_bars": not hub.are_progress_bars_disabled(),
        "own_handlers": [len(logging.getLogger(n).handlers) for n in ("transformers", "datasets", "huggingface_hub")],
    }}))
"""


@pytest.mark.parametrize(("verbose", "rank", "expected"), [
    (False, "0", {"transformers_bars": False, "datasets_bars": False, "hub_bars": True}),
    (False, "1", {"transformers_bars": False, "datasets_bars": False, "hub_bars": False}),
    (True, "1", {"transformers_bars": True, "datasets_bars": True, "hub_bars": True}),
])
def test_library_bars_are_quiet_unless_verbose_and_downloads_drawn_once(verbose, rank, expected):
    state = json.loads(run_python(LIBRARIES.format(verbose=verbose), RANK=rank, WORLD_SIZE="2").stdout)
    assert state.pop("own_handlers") == [0, 0, 0]  # their records reach the tqdm-aware root handler
    assert state == expected


def test_a_user_setting_of_the_bars_wins():
    state = json.loads(run_python(LIBRARIES.format(verbose=False), HF_DATASETS_DISABLE_PROGRESS_BARS="0").stdout)
    assert state["datasets_bars"] is True


def test_a_program_that_set_up_logging_keeps_it():
    """Like logging.basicConfig: a root logger with handlers (a program, or pytest, calling main) is left
    alone, and so are the libraries it imported."""
    done = run_python("""
        import logging, sys
        from corl.cli.logs import setup_logging, _AfterImport
        mine = logging.StreamHandler(sys.stdout)
        logging.getLogger().addHandler(mine)
        setup_logging(True)
        assert logging.getLogger().handlers == [mine] and logging.getLogger().level == logging.WARNING
        assert not any(isinstance(finder, _AfterImport) for finder in sys.meta_path)
    """)
    assert done.returncode == 0


def test_shapes_show_says_where_the_sheet_is_once(tmp_path):
    data, sheet = tmp_path / "shapes", tmp_path / "sheet.png"
    run_python(f"""
        from corl.cli import main
        assert main(["shapes", "build", "--out", {str(data)!r}, "--n-train", "4", "--n-test", "2",
                     "--image-size", "32"]) == 0
    """)
    done = run_python(f"""
        from corl.cli import main
        assert main(["shapes", "show", "--data", {str(data)!r}, "--out", {str(sheet)!r}, "--max-rows", "2"]) == 0
    """)
    assert (done.stdout + done.stderr).count(str(sheet)) == 1 and sheet.is_file()
