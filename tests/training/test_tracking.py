"""Metrics plumbing: NaN-aware statistics, the JSONL file with its header and resume truncation, the
first-10% / last-10% reward summary."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from corl.training.testing import recording_tracker_class
from corl.training.trackers import tracker_names
from corl.training.tracking import MetricsLogger, StageTimer, nan_stats, read_metrics, reward_summary


def test_nan_stats_skip_masked_rows():
    mean, std = nan_stats(torch.tensor([1.0, float("nan"), 3.0]))
    assert mean == 2.0 and std == pytest.approx(math.sqrt(2.0))
    mean, std = nan_stats(torch.tensor([float("nan")]))
    assert math.isnan(mean) and std == 0.0


def test_reward_summary_uses_first_and_last_tenth():
    rows = [{"step": s, "reward/t2i/mean": float(s)} for s in range(1, 21)]  # 20 steps: windows of 2
    rows[5]["reward/t2i/mean"] = None  # a step whose rewards were all masked is left out
    s = reward_summary(rows, ["t2i", "mm2t"])["t2i"]
    assert (s["first"], s["last"], s["window"], s["steps"]) == (1.5, 19.5, 2, 19)
    assert s["change"] == 18.0
    assert reward_summary(rows, ["mm2t"])["mm2t"]["steps"] == 0


def test_metrics_file_header_rows_nan_and_resume(tmp_path):
    log = MetricsLogger(tmp_path, {"stage": "t2i"}, is_main=True)
    for step in (1, 2, 3):
        log.log({"step": step, "reward/t2i/mean": float(step), "kl": float("nan")})
    log.close()
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1])
    assert first["kl"] is None  # strict JSON: NaN written as null
    # A run killed after logging step 3 but checkpointed at step 2 resumes at 2: row 3 is dropped.
    resumed = MetricsLogger(tmp_path, {"stage": "other"}, is_main=True, resume_step=2)
    resumed.log({"step": 3, "reward/t2i/mean": 30.0})
    header, rows = read_metrics(tmp_path / "metrics.jsonl")
    assert header == {"stage": "t2i"}  # the original header stays
    assert [(r["step"], r["reward/t2i/mean"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 30.0)]
    assert [r["step"] for r in resumed.history] == [1, 2, 3]


def test_report_to_names_are_checked_before_a_run_starts():
    assert tracker_names([]) == [] and tracker_names("none") == [] and tracker_names(["none"]) == []
    with pytest.raises(ValueError, match=r"unknown logger\(s\) \['nonesuch'\]; valid: none, all, .*tensorboard"):
        tracker_names(["nonesuch"])


def test_stage_timer_sums_per_stage():
    timer = StageTimer()
    for _ in range(2):
        with timer("a"):
            pass
    times = timer.pop()
    assert set(times) == {"a"} and times["a"] >= 0 and timer.pop() == {}


@pytest.mark.parametrize("name", ["tensorboard", "wandb"])
def test_a_missing_tracker_package_is_a_clear_error(name):
    """accelerate itself would skip the tracker with a debug message and the run would report nowhere."""
    if importlib.util.find_spec(name) is not None or (name == "tensorboard" and importlib.util.find_spec("tensorboardX")):
        pytest.skip(f"{name} is installed")
    with pytest.raises(ImportError, match=rf"train.report_to has '{name}' but it is not installed: "
                                          rf"pip install 'corl\[{name}\]'"):
        tracker_names([name])


def accelerator_with(tracker):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)  # a fresh one, whatever earlier tests built
    GradientState._reset_state()
    return Accelerator(cpu=True, log_with=[tracker])


def test_scalars_and_config_reach_the_trackers_through_accelerate(tmp_path):
    tracker = recording_tracker_class()()
    log = MetricsLogger(tmp_path, {"stage": "t2i"}, is_main=True, accelerator=accelerator_with(tracker),
                        run_config={"stage": "t2i", "grpo": {"beta": 0.0, "loss_type": "dapo"},
                                    "train": {"report_to": ["recording"], "resume": None}})
    assert tracker.config == {"stage": "t2i", "grpo.beta": 0.0, "grpo.loss_type": "dapo",
                              "train.report_to": '["recording"]', "train.resume": "null"}
    log.log({"step": 1, "reward/t2i/mean": 0.5, "kl": float("nan"), "learning_rate": 1e-3})
    log.log({"step": 2, "reward/t2i/mean": 0.75, "kl": 0.01, "learning_rate": 1e-3})
    log.close()
    # NaN is left out (it is null in metrics.jsonl); the step is the tracker's step, not a value
    assert tracker.scalars == [(1, {"reward/t2i/mean": 0.5, "learning_rate": 1e-3}),
                               (2, {"reward/t2i/mean": 0.75, "kl": 0.01, "learning_rate": 1e-3})]
    assert tracker.finished
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")[1]] == [1, 2]  # the file is unchanged


def write_sample_files(directory: Path) -> list[Path]:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    sheet = directory / "step-000003.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(sheet)
    answers = directory / "step-000003.jsonl"
    answers.write_text(json.dumps({"step": 3, "question": "How many | shapes?", "solution": "2", "answers": [
        {"text": "2", "reward": 1.0, "accuracy": 1.0}, {"text": "three\nshapes", "reward": None, "accuracy": None}],
    }) + "\n")
    return [sheet, answers]


def test_sample_images_and_answers_reach_the_trackers(tmp_path):
    tracker = recording_tracker_class()()
    log = MetricsLogger(tmp_path, {}, is_main=True, accelerator=accelerator_with(tracker))
    log.log_samples(write_sample_files(tmp_path / "samples"), 3)
    [(step, images)] = tracker.images
    assert step == 3 and list(images) == ["samples/t2i"]
    [image] = images["samples/t2i"]
    assert image.size == (40, 30) and image.getpixel((0, 0)) == (200, 10, 10)
    assert tracker.tables == [(3, "samples/mm2t", ["question", "solution", "answer", "reward"],
                               [["How many | shapes?", "2", "2", 1.0], ["How many | shapes?", "2", "three\nshapes", None]])]


def test_only_the_main_process_reports(tmp_path):
    tracker = recording_tracker_class()()
    log = MetricsLogger(tmp_path, {}, is_main=False, accelerator=accelerator_with(tracker))
    log.log({"step": 1, "loss": 0.5})
    log.log_samples(write_sample_files(tmp_path / "samples"), 1)
    log.close()
    assert (tracker.config, tracker.scalars, tracker.images, tracker.tables) == (None, [], [], [])
    assert not (tmp_path / "metrics.jsonl").exists()


def test_tensorboard_gets_scalars_the_sheet_and_a_text_table(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from corl.config import CorlConfig
    from corl.training.setup import build_accelerator

    cfg = CorlConfig()
    cfg.model.device = "cpu"
    cfg.train.report_to = ["tensorboard"]
    accelerator, _ = build_accelerator(cfg, tmp_path)
    log = MetricsLogger(tmp_path, {}, is_main=True, accelerator=accelerator, run_config={"grpo": {"beta": 0.0}})
    log.log({"step": 1, "loss": 0.5})
    log.log_samples(write_sample_files(tmp_path / "samples"), 1)
    log.close()
    [run] = [p for p in (tmp_path / "tensorboard").iterdir() if p.is_dir()]
    events = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("loss")] == [0.5]
    assert events.Tags()["images"] == ["samples/t2i"]
    assert any(tag.startswith("samples/mm2t") for tag in events.Tags()["tensors"])  # add_text writes a tensor


# ------------------------------------------------------------------------- torn lines, full disk


ROWS = '{"header": {"stage": "t2i"}}\n{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.25}\n'


@pytest.mark.parametrize("torn", ['{"step": 3, "loss": 0.1', '{"step": 3, "lo', "\x00\x00\x00\x00", '{"step": 3}\n\x00\x00'])
def test_a_torn_last_line_is_dropped_with_a_warning(tmp_path, caplog, torn):
    """What a run killed (or out of disk space) while appending a row leaves; NUL bytes are what some file
    systems leave after a crash."""
    path = tmp_path / "metrics.jsonl"
    path.write_text(ROWS + torn)
    with caplog.at_level("WARNING", logger="corl.training.tracking"):
        header, rows = read_metrics(path)
    assert header == {"stage": "t2i"}
    assert [r["step"] for r in rows] == ([1, 2, 3] if torn.startswith('{"step": 3}\n') else [1, 2])
    assert f"{path}: dropping its last line" in caplog.text
    caplog.clear()
    read_metrics(path, warn=False)
    assert caplog.text == ""


@pytest.mark.parametrize("bad", ['{"step": 2, "lo', "garbage", "[1, 2]"])
def test_a_damaged_line_before_the_last_names_the_file_and_line(tmp_path, bad):
    path = tmp_path / "metrics.jsonl"
    path.write_text(ROWS.replace('{"step": 2, "loss": 0.25}', bad) + '{"step": 3}\n\n')
    with pytest.raises(ValueError, match=rf"{path}: line 3 is not a JSON object \(.*\): the file is damaged"):
        read_metrics(path)


def test_resume_drops_a_torn_last_line_and_the_rows_after_the_checkpoint(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text(ROWS + '{"step": 3, "loss": 0.1}\n{"step": 4, "lo')
    with caplog.at_level("WARNING", logger="corl.training.tracking"):
        log = MetricsLogger(tmp_path, {"stage": "t2i"}, is_main=True, resume_step=2)
    assert "dropping its last line 5" in caplog.text and str(path) in caplog.text
    log.log({"step": 3, "loss": 0.3})
    assert [(r["step"], r["loss"]) for r in read_metrics(path)[1]] == [(1, 0.5), (2, 0.25), (3, 0.3)]
    assert path.read_text().endswith('{"step": 3, "loss": 0.3}\n')  # the file is whole again


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_while_logging_is_one_clear_error(tmp_path):
    """/dev/full fails every write with ENOSPC, as a full disk does."""
    from corl.errors import DiskFull, RunFailed

    log = MetricsLogger(tmp_path, {"stage": "t2i"}, is_main=True)
    (tmp_path / "metrics.jsonl").unlink()
    (tmp_path / "metrics.jsonl").symlink_to("/dev/full")
    with pytest.raises(DiskFull, match=rf"^no space left on device while writing {tmp_path / 'metrics.jsonl'} "
                                       r"\(free \d+ MiB\): free space, then resume with --resume$") as caught:
        log.log({"step": 1, "loss": 0.5})
    assert isinstance(caught.value, RunFailed) and isinstance(caught.value, OSError)


def test_a_full_disk_while_rewriting_on_resume_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    from corl.errors import DiskFull

    path = tmp_path / "metrics.jsonl"
    path.write_text(ROWS)
    real_write_text = Path.write_text

    def fill_the_disk(self, text, *args, **kwargs):
        if self.name.endswith(".tmp"):
            real_write_text(self, text[: len(text) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fill_the_disk)
    with pytest.raises(DiskFull, match=f"while writing {path} "):
        MetricsLogger(tmp_path, {"stage": "t2i"}, is_main=True, resume_step=1)
    assert path.read_text() == ROWS and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
