"""`corl eval`: argument handling, suites end to end with a fake policy, atomic results.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets
import pytest

from corl.cli import eval as commands
from corl.paths import CACHE_ENV

from .conftest import eval_helpers

FakePolicy = eval_helpers.FakePolicy
GENEVAL_LINES = eval_helpers.GENEVAL_LINES
image = eval_helpers.image
write_parquet = eval_helpers.write_parquet

# The suites' generate_images / answer calls go to FakePolicy's methods (tests/eval/helpers.py).
pytestmark = pytest.mark.usefixtures("fake_eval_calls")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="corl")
    commands.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["eval", *argv])


def test_registered_in_cli():
    from corl import cli

    assert "corl.cli.eval" in cli.COMMAND_MODULES


def test_shapes_suite_from_saved_dataset(tmp_path, shapes_split, scenes_by_caption, solutions_by_question):
    data = tmp_path / "shapes"
    datasets_dict = datasets.DatasetDict({"test": shapes_split})
    datasets_dict.save_to_disk(str(data))
    policy = FakePolicy(scenes_by_caption, lambda q: "<think>.</think>" + solutions_by_question[q])
    out = tmp_path / "res" / "results.json"
    args = parse(
        [
            "--model",
            "ckpt",
            "--data",
            str(data),
            "--out",
            str(out),
            "--images-per-prompt",
            "1",
            "--max-rows",
            "6",
            "--details",
        ]
    )
    result = commands.run_eval(args, policy=policy)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["t2i.overall"] == 1.0 and saved["mc.accuracy"] == 1.0 and saved["oe.accuracy"] == 1.0
    assert saved["settings"]["n_rows"] == 6 and saved["settings"]["model"] == "ckpt"
    assert len(saved["details"]) == 6
    assert list(out.parent.iterdir()) == [out]


def test_default_shapes_data_is_built_once_into_the_cache(tmp_path, monkeypatch, scenes_by_caption):
    from corl.data import shapes_source

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(shapes_source, "DEFAULT_N_TRAIN", 2)
    monkeypatch.setattr(shapes_source, "DEFAULT_N_TEST", 12)
    args = parse(["--out", str(tmp_path / "r.json"), "--images-per-prompt", "1"])
    result = commands.run_eval(args, policy=FakePolicy(scenes_by_caption))
    folder = tmp_path / "cache" / "shapes" / "train2-test12-seed0-px48"
    assert (folder / "dataset_dict.json").is_file()
    # same test rows as the shapes_split fixture (test rows do not depend on n_train)
    assert result["t2i.overall"] == 1.0
    assert shapes_source.default_shapes_dir() == folder  # reused, not rebuilt
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_geneval_suite(tmp_path):
    meta = tmp_path / "evaluation_metadata.jsonl"
    meta.write_text("\n".join(json.dumps(line) for line in GENEVAL_LINES))
    out = tmp_path / "r.json"
    args = parse(
        [
            "--suite",
            "geneval",
            "--data",
            str(meta),
            "--image-dir",
            str(tmp_path / "img"),
            "--out",
            str(out),
            "--images-per-prompt",
            "2",
            "--max-rows",
            "2",
        ]
    )
    commands.run_eval(args, policy=FakePolicy())
    saved = json.loads(out.read_text())
    assert saved["images"]["n_written"] == 2 and saved["settings"]["images_per_prompt"] == 2
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == ["00000", "00001"]
    with pytest.raises(ValueError, match="--image-dir"):
        commands.run_eval(parse(["--suite", "dpg", "--data", str(tmp_path), "--out", str(out)]), FakePolicy())


def test_benchmark_suites(tmp_path):
    data = write_parquet(
        tmp_path / "pope.parquet",
        {
            "question": ["Is there a dog?", "Is there a cat?"],
            "answer": ["yes", "no"],
            "image": [image((1, 1, 1)), image((2, 2, 2))],
            "category": ["random", "popular"],
        },
    )
    policy = FakePolicy(answer_fn=lambda q: "<think>.</think><answer>yes</answer>")
    out = tmp_path / "r.json"
    result = commands.run_eval(
        parse(["--suite", "benchmark", "--recipe", "pope", "--data", str(data), "--out", str(out)]),
        policy=policy,
    )
    assert result["accuracy"] == 0.5 and result["yes_no"]["precision"] == 0.5
    adhoc = commands.run_eval(
        parse(["--suite", "oe", "--data", str(data), "--column-map", "solution=answer", "--out", str(out)]),
        policy=policy,
    )
    assert adhoc["accuracy"] == 0.5 and adhoc["benchmark"] == "pope" and "yes_no" not in adhoc
    with pytest.raises(ValueError, match="needs --recipe"):
        commands.run_eval(parse(["--suite", "benchmark", "--data", str(data), "--out", str(out)]), policy)
    with pytest.raises(ValueError, match="corl_column=source_column"):
        commands.run_eval(
            parse(["--suite", "oe", "--data", str(data), "--column-map", "solution", "--out", str(out)]),
            policy,
        )


def test_bad_arguments_fail_before_a_model_is_loaded(tmp_path, monkeypatch):
    def no_loading(args):
        raise AssertionError("the policy must not be loaded for bad arguments")

    monkeypatch.setattr(commands, "_load_policy", no_loading)
    out = str(tmp_path / "r.json")
    for argv, message in [
        (["--suite", "wise"], "needs --data"),
        (["--suite", "geneval", "--data", "x.jsonl"], "needs --image-dir"),
        (["--suite", "mc"], "needs --recipe"),
        (["--suite", "oe", "--data", "x", "--column-map", "nonsense"], "corl_column=source_column"),
    ]:
        with pytest.raises(ValueError, match=message):
            commands.run_eval(parse([*argv, "--out", out]))
    with pytest.raises(SystemExit):  # a bad number is refused while parsing (corl.cli.argtypes)
        parse(["--batch-size", "0", "--out", out])
    assert not Path(out).exists()


def test_shapes_answer_samples_table(tmp_path, shapes_split, scenes_by_caption, solutions_by_question):
    data = tmp_path / "shapes"
    datasets.DatasetDict({"test": shapes_split}).save_to_disk(str(data))
    policy = FakePolicy(scenes_by_caption, lambda q: "<think>.</think>" + solutions_by_question[q])
    args = parse(["--model", "ckpt", "--data", str(data), "--out", str(tmp_path / "r.json"), "--images-per-prompt",
                  "1", "--answer-samples", "3"])
    result = commands.run_eval(args, policy=policy)
    assert result["settings"]["answer_samples"] == 3
    assert sum(len(c["questions"]) for c in policy.answer_calls if not c["greedy"]) == 3 * len(shapes_split)
    table = commands.sampled_answers_table(result).splitlines()
    assert table[0].split()[:7] == ["format", "template", "n", "greedy", "sampled", "blind", "contrast"]
    oe_all = next(line.split() for line in table if line.startswith("oe") and " all " in line)
    # a policy that always answers right: greedy and sampled 100%, no question with a wrong sample
    assert oe_all[3:4] == ["100.0"] and oe_all[4] == "100.0" and oe_all[6] == "0.0"
    assert 0 <= float(oe_all[5]) <= 100  # the image-blind answerer (tests/eval/test_shapes_suite.py)
    assert commands.sampled_answers_table({"oe.accuracy": 1.0}) == ""
    with pytest.raises(SystemExit):
        parse(["--model", "m", "--out", "r.json", "--answer-samples", "-1"])
