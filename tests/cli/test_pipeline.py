"""The pieces `corl demo` and `corl reproduce` chain stages with: settings recorded per run folder (a re-run
with others is refused, naming them, unless forced), and finished stages found in a moved folder."""

from __future__ import annotations

import json
import shutil

import pytest

from corl.cli.pipeline import check_settings
from corl.report.demo import final_checkpoint as finished_checkpoint
from corl.report.demo import read_json


def test_a_rerun_with_other_settings_is_refused_naming_them_unless_forced(tmp_path):
    out = tmp_path / "run"
    first = {"family": "janus-pro-1b/paper", "overrides": ["seed=1"], "max_rows": None}
    assert check_settings(out, first, force=False) is False  # a new folder
    assert check_settings(out, first, force=False) is False  # the same settings: continue
    changed = {**first, "overrides": ["seed=2"], "max_rows": 10}
    with pytest.raises(ValueError, match=r"max_rows: None -> 10, overrides: \['seed=1'\] -> \['seed=2'\].*--force"):
        check_settings(out, changed, force=False)
    assert read_json(out / "run.json") == first  # the refused run changed nothing
    assert check_settings(out, changed, force=True) is True  # redo: the caller clears the old results
    assert read_json(out / "run.json") == changed


def test_a_finished_stage_is_found_after_its_folder_moved(tmp_path):
    stage = tmp_path / "a" / "unified"
    (stage / "checkpoint-5").mkdir(parents=True)
    (stage / "summary.json").write_text(json.dumps({"final_checkpoint": str(stage / "checkpoint-5")}))
    moved = tmp_path / "b" / "unified"
    shutil.copytree(stage, moved)
    shutil.rmtree(tmp_path / "a")
    assert finished_checkpoint(moved) == moved / "checkpoint-5"


def test_a_damaged_result_file_is_named(tmp_path):
    (tmp_path / "summary.json").write_text('{"final_checkpoint": ')
    with pytest.raises(ValueError, match="summary.json is damaged .*delete it"):
        finished_checkpoint(tmp_path)
