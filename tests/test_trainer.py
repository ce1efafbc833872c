"""The trainer on a tiny random Janus (corl.training.testing): every stage, loss type and unified mode
updates the trained parameters and nothing else; image rewards reach the loss; beta > 0 brings a
reference and a KL; num_iterations = 2 reuses one rollout batch; LoRA exports merged weights; a NaN
reward masks its row; the metrics file, summary and samples hold what they promise."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from corl.algos import policy_loss
from corl.rewards import register_function, reward_names, unregister
from corl.trainer import collect_batch, score_inputs, setup_run, train
from corl.training.testing import (
    FROZEN_PREFIXES,
    answer_length,
    recording_tracker_class,
    save_tiny_policy,
    tiny_config,
)
from corl.training.tracking import read_metrics

torch.set_num_threads(2)

DECODER_PREFIX = "model.language_model.layers."


# ------------------------------------------------------------------------------------ test rewards


def red_fraction(prompts, completions, **columns):
    """Fraction of reddish pixels: deterministic and different between random images."""
    out = []
    for image in completions:
        pixels = torch.tensor(list(image.convert("RGB").getdata()), dtype=torch.float32)  # [H*W, 3]
        out.append(float(((pixels[:, 0] > pixels[:, 1] + 20) & (pixels[:, 0] > pixels[:, 2] + 20)).float().mean()))
    return out


def constant(prompts, completions, **columns):
    return [1.0] * len(completions)


def nan_on_odd_rows(prompts, completions, **columns):
    return [math.nan if i % 2 else len(c) / 10.0 for i, c in enumerate(completions)]


def all_nan(prompts, completions, **columns):
    return [math.nan] * len(completions)


TEST_REWARDS = {"test_answer_length": answer_length, "test_red_fraction": red_fraction, "test_constant": constant,
                "test_nan_odd": nan_on_odd_rows, "test_all_nan": all_nan}


@pytest.fixture(scope="module", autouse=True)
def test_rewards():
    for name, fn in TEST_REWARDS.items():
        if name not in reward_names():
            register_function(name, fn)
    yield
    for name in TEST_REWARDS:
        unregister(name)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_policy(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="module", autouse=True)
def corl_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CORL_CACHE", str(tmp_path_factory.mktemp("corl_cache")))
        yield


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def assert_trained_only_backbone(before: dict, after: dict) -> None:
    """TRL-style: the decoder layers changed; every frozen module is bit-identical."""
    changed = [k for k in before if k.startswith(DECODER_PREFIX) and not torch.equal(before[k], after[k])]
    decoder = [k for k in before if k.startswith(DECODER_PREFIX) and k.endswith("proj.weight")]
    assert set(decoder) <= set(changed), f"decoder weights that did not change: {sorted(set(decoder) - set(changed))}"
    frozen = [k for k in before if k.startswith(FROZEN_PREFIXES)]
    assert frozen, "expected frozen modules in the checkpoint"
    assert all(torch.equal(before[k], after[k]) for k in frozen), "a frozen module changed"


def rows_of(out_dir: Path) -> tuple[dict, list[dict]]:
    return read_metrics(out_dir / "metrics.jsonl")


# ---------------------------------------------------------------------------------------- stages


@pytest.mark.parametrize(
    "stage, loss_type, extra",
    [
        ("t2i", "grpo", []),
        ("mc", "bnpo", ["rewards.mm2t_reward_funcs=[test_answer_length]", "rewards.mm2t_reward_weights=[1.0]",
                        "model.gradient_checkpointing=true"]),
        ("oe", "dr_grpo", ["rewards.mm2t_reward_funcs=[test_answer_length]", "rewards.mm2t_reward_weights=[1.0]",
                           "train.precision=bf16"]),  # fp32 weights, bf16 autocast
        # an answer reward with spread: the shipped unified stage gives answers their own advantage
        # (unified_mode=separate), and a random tiny model's answers all score 0 on accuracy and format
        ("unified", "dapo", ["optim.gradient_accumulation_steps=2", "rewards.mm2t_reward_funcs=[test_answer_length]",
                             "rewards.mm2t_reward_weights=[1.0]"]),
    ],
)
def test_every_stage_and_loss_type_trains_the_backbone_only(model_dir, tmp_path, stage, loss_type, extra):
    cfg = tiny_config(model_dir, stage, [f"grpo.loss_type={loss_type}", *extra])
    result = train(cfg, tmp_path / "run")
    assert result.steps == 1 and result.final_checkpoint == tmp_path / "run" / "checkpoint-1"
    assert_trained_only_backbone(weights(model_dir), weights(result.final_checkpoint))
    header, rows = rows_of(tmp_path / "run")
    assert header["stage"] == stage and header["loss_type"] == loss_type
    tasks = {"unified": ["t2i", "mm2t"], "t2i": ["t2i"], "mc": ["mm2t"], "oe": ["mm2t"]}[stage]
    assert header["tasks"] == tasks
    row = rows[0]
    assert row["grad_norm"] > 0
    for task in tasks:
        assert f"loss/{task}" in row and f"entropy/{task}" in row and row[f"advantages/{task}/abs_mean"] > 0
    assert header["mixed_precision"] == ("bf16" if "train.precision=bf16" in extra else "no")
    if stage == "unified":  # two micro-batches of B=2 rows, each with its own rollouts
        assert header["gradient_accumulation_steps"] == 2 and header["global_batch_prompts"] == 4


def test_bf16_compute_rolls_out_with_bf16_kv_caches(model_dir, tmp_path, monkeypatch):
    """fp32 master weights with train.precision=bf16: both rollouts run under the update's autocast, so
    their KV caches are allocated in bf16 (half the memory of fp32 caches)."""
    from corl.generation import decoding

    allocated = []
    original = decoding.PreallocatedCache.__init__

    def recording_init(self, *args, dtype, **kwargs):
        allocated.append(dtype)
        original(self, *args, dtype=dtype, **kwargs)

    monkeypatch.setattr(decoding.PreallocatedCache, "__init__", recording_init)
    result = train(tiny_config(model_dir, "unified", ["train.precision=bf16"]), tmp_path / "run")
    assert result.steps == 1
    assert len(allocated) >= 2 and set(allocated) == {torch.bfloat16}  # image and text rollouts
    assert {t.dtype for t in weights(result.final_checkpoint).values()} == {torch.float32}


def test_chunked_rollouts_train(model_dir, tmp_path):
    """rollout.max_rows=1: every image and answer is sampled in its own forward batch; the step trains."""
    result = train(tiny_config(model_dir, "unified", ["rollout.max_rows=1"]), tmp_path / "run")
    assert result.steps == 1
    assert_trained_only_backbone(weights(model_dir), weights(result.final_checkpoint))
    _, rows = rows_of(tmp_path / "run")
    assert rows[0]["grad_norm"] > 0


@pytest.mark.parametrize("stage, loss_type, extra", [
    ("unified", "grpo", ["optim.gradient_accumulation_steps=2"]),
    ("mc", "bnpo", ["rewards.mm2t_reward_funcs=[test_answer_length]", "rewards.mm2t_reward_weights=[1.0]"]),
    ("t2i", "dr_grpo", ["rewards.t2i_reward_funcs=[test_red_fraction]", "rewards.t2i_reward_weights=[1.0]"]),
])
def test_update_in_chunks_of_rows_equals_the_whole_micro_batch(model_dir, tmp_path, stage, loss_type, extra):
    """train.update_batch_size splits each micro-batch's rows (B x G = 4) into chunks scored and
    back-propagated one by one: same rollouts, same update and metrics up to float rounding. Every row runs
    its own prompt here (a chunk of 1 row has no group to pack; packed scoring has its own test below)."""
    runs = {}
    for size in (0, 1, 3):
        # Adam's first step moves a weight by lr * g / (|g| + eps), lr = 1e-3: with torch's eps (1e-8) a
        # gradient that is 0 in one order of summation and ~1e-10 of rounding in the other moves its weight
        # by ~1e-5; at eps 1e-6 rounding in g moves a weight by at most a few 1e-6.
        cfg = tiny_config(model_dir, stage, [f"grpo.loss_type={loss_type}", f"train.update_batch_size={size}",
                                             "train.share_prompts=false", "optim.adam_epsilon=1e-6", *extra])
        runs[size] = (train(cfg, tmp_path / f"run{size}"), rows_of(tmp_path / f"run{size}")[1][0])
    whole = weights(runs[0][0].final_checkpoint)
    before = weights(model_dir)
    assert any(not torch.equal(before[k], whole[k]) for k in whole if k.startswith(DECODER_PREFIX))
    for size in (1, 3):
        chunked = weights(runs[size][0].final_checkpoint)
        assert all(torch.allclose(whole[k], chunked[k], rtol=0, atol=1e-5) for k in whole)
        row, reference = runs[size][1], runs[0][1]
        assert row["reward/" + ("t2i" if stage == "t2i" else "mm2t") + "/mean"] == reference[
            "reward/" + ("t2i" if stage == "t2i" else "mm2t") + "/mean"]  # the same rollouts
        for key in [k for k in reference if k.startswith(("loss", "entropy/", "clip_ratio", "grad_norm"))]:
            assert row[key] == pytest.approx(reference[key], rel=1e-4, abs=1e-6), key


def test_shared_prompt_scoring_trains_as_row_by_row(model_dir, tmp_path):
    """train.share_prompts (the default) scores a group's answers in one packed sequence: the same rollouts,
    update and metrics as scoring every row with its own prompt, up to float rounding."""
    runs = {}
    for share in (False, True):
        cfg = tiny_config(model_dir, "mc", [f"train.share_prompts={str(share).lower()}", "grpo.beta=0.04",
                                            "rewards.mm2t_reward_funcs=[test_answer_length]",
                                            "rewards.mm2t_reward_weights=[1.0]"])
        result = train(cfg, tmp_path / f"run{share}")
        runs[share] = (weights(result.final_checkpoint), rows_of(tmp_path / f"run{share}")[1][0])
    (plain, plain_row), (packed, packed_row) = runs[False], runs[True]
    assert all(torch.allclose(plain[k], packed[k], rtol=0, atol=1e-5) for k in plain)
    assert packed_row["reward/mm2t/mean"] == plain_row["reward/mm2t/mean"]
    for key in [k for k in plain_row if k.startswith(("loss", "entropy/", "kl", "grad_norm"))]:
        assert packed_row[key] == pytest.approx(plain_row[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("mode", ["joint_reward", "joint_advantage", "separate"])
def test_unified_modes(model_dir, tmp_path, mode):
    cfg = tiny_config(model_dir, "unified", [f"grpo.unified_mode={mode}", "rewards.mm2t_reward_funcs=[test_answer_length]",
                                            "rewards.mm2t_reward_weights=[1.0]"])
    result = train(cfg, tmp_path / "run")
    assert_trained_only_backbone(weights(model_dir), weights(result.final_checkpoint))
    header, (row,) = rows_of(tmp_path / "run")
    assert header["unified_mode"] == mode
    adv_t2i, adv_mm2t = row["advantages/t2i/abs_mean"], row["advantages/mm2t/abs_mean"]
    assert adv_t2i > 0 and adv_mm2t > 0
    if mode == "separate":  # each task normalized on its own: |A| means differ
        assert adv_t2i != pytest.approx(adv_mm2t)
    else:  # one advantage per generation index for the image and the answer
        assert adv_t2i == pytest.approx(adv_mm2t)
    assert ("reward/joint/mean" in row) == (mode == "joint_reward")
    shares = [row[f"attrib/{t}_share"] for t in ("t2i", "mm2t")]  # logged every unified step
    if shares[0] is not None:  # None when no group had any spread
        assert sum(shares) == pytest.approx(1.0) and (mode != "separate" or shares[0] == pytest.approx(1.0))
    assert row["attrib/t2i_spread"] >= 0 and row["attrib/mm2t_spread"] >= 0
    if mode == "joint_reward":
        lam = cfg.grpo.unified_lambda
        assert row["reward/joint/mean"] == pytest.approx(row["reward/t2i/mean"] + lam * row["reward/mm2t/mean"], abs=1e-5)


# ----------------------------------------------------------------------------- image rewards reach

def test_image_rewards_reach_the_loss(model_dir, tmp_path):
    """Image completions have all N tokens counted; differing image rewards give a non-zero gradient on
    the backbone through the image-token log-probs; equal rewards give exactly none."""
    cfg = tiny_config(model_dir, "t2i", ["rewards.t2i_reward_funcs=[test_red_fraction]", "rewards.t2i_reward_weights=[1.0]"])
    run, _ = setup_run(cfg, tmp_path / "run", None)
    batch = collect_batch(run, data_step=0)
    t2i = batch.micro_batches[0].tasks["t2i"]
    rows, n = 2 * cfg.rollout.num_generations, run.policy.num_image_tokens
    assert t2i.completion_mask.shape == (rows, n) and bool(t2i.completion_mask.all())  # never "truncated"
    assert t2i.rewards.unique().numel() > 1 and t2i.advantages.abs().sum() > 0

    def backbone_grad(advantages: torch.Tensor) -> float:
        run.optimizer.zero_grad(set_to_none=True)
        logps, _ = run.module(**score_inputs(run.tasks, batch.micro_batches[0]))["t2i"]
        loss, _ = policy_loss(logps, None, advantages, t2i.completion_mask, loss_type="grpo")
        loss.backward()
        grads = [p.grad for p in run.trainable.parameters if p.grad is not None]
        return float(sum(g.abs().sum() for g in grads))

    assert backbone_grad(t2i.advantages) > 0
    assert backbone_grad(torch.zeros_like(t2i.advantages)) == 0.0


def test_equal_image_rewards_leave_weights_unchanged(model_dir, tmp_path):
    cfg = tiny_config(model_dir, "t2i", ["rewards.t2i_reward_funcs=[test_constant]", "rewards.t2i_reward_weights=[1.0]"])
    result = train(cfg, tmp_path / "run")
    _, (row,) = rows_of(tmp_path / "run")
    assert row["frac_reward_zero_std"] == 1.0 and row["grad_norm"] == 0.0
    before, after = weights(model_dir), weights(result.final_checkpoint)
    assert all(torch.equal(before[k], after[k]) for k in before)


# ------------------------------------------------------------------------ reference, iterations, LoRA


def test_beta_brings_a_reference_and_kl_and_num_iterations_reuses_rollouts(model_dir, tmp_path):
    cfg = tiny_config(model_dir, "t2i", ["grpo.beta=0.1", "grpo.num_iterations=2", "train.max_steps=2"])
    train(cfg, tmp_path / "run")
    header, rows = rows_of(tmp_path / "run")
    assert header["reference"] == "frozen_copy" and header["num_iterations"] == 2
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["kl"] == 0.0  # the policy still equals its reference
    assert rows[1]["kl"] > 0.0  # one update later it does not
    # One rollout batch feeds both optimizer steps: same rewards, no second rollout.
    assert rows[1]["reward/t2i/mean"] == rows[0]["reward/t2i/mean"]
    assert "time/image_rollout" in rows[0] and "time/image_rollout" not in rows[1]


def test_compile_decode_runs_both_rollouts_through_the_static_decoder(model_dir, tmp_path, monkeypatch):
    """rollout.compile_decode reaches both rollouts (the compiler itself is replaced: it is slow on CPU)."""
    from corl.generation import decoding
    from corl.generation.decoding import StaticDecoder

    built, owners, compilers = [], [], []

    def compile_decoder(decoder, weights, example, cpu_compiler):
        built.append(decoder)
        owners.append(weights)
        compilers.append(cpu_compiler)
        return decoder

    monkeypatch.setattr(decoding, "compile_decoder", compile_decoder)
    cfg = tiny_config(model_dir, "unified", ["rollout.compile_decode=true", "rollout.decoding.cpu_compiler=inductor"])
    result = train(cfg, tmp_path / "run")
    assert result.steps == 1
    assert len(built) == 2 and all(isinstance(module, StaticDecoder) for module in built)
    assert compilers == ["inductor", "inductor"]  # the recipe's compiler choice reaches both rollouts
    # the weights each compiled step binds: the whole model for images (code embedding, generation
    # head), the LLM for answers
    assert {type(owner).__name__ for owner in owners} == {"JanusForConditionalGeneration", "LlamaModel"}
    assert {module.cache_shape[0] for module in built} == {  # image rows with CFG; answer rows
        2 * cfg.train.per_device_batch_size * cfg.rollout.num_generations,
        cfg.train.per_device_batch_size * cfg.rollout.num_generations,
    }


def test_stratify_by_reaches_the_samplers_and_a_wrong_column_is_named(model_dir, tmp_path):
    cfg = tiny_config(model_dir, "unified", ["data.stratify_by=[category]"])
    run, _ = setup_run(cfg, tmp_path / "run", None)
    (sampler,) = run.samplers
    categories = run.dataset["category"]
    labels = sampler.strata  # one id per row, equal exactly where the categories are
    assert labels is not None and len(set(labels)) == len(set(categories))
    assert all((labels[i] == labels[j]) == (categories[i] == categories[j])
               for i in range(len(labels)) for j in range(len(labels)))
    with pytest.raises(ValueError, match=r"\['kind'\] not among"):
        setup_run(tiny_config(model_dir, "unified", ["data.stratify_by=[kind]"]), tmp_path / "other", None)


def test_no_reference_without_beta(model_dir, tmp_path):
    cfg = tiny_config(model_dir, "t2i", ["grpo.beta=0.0"])
    train(cfg, tmp_path / "run")
    header, (row,) = rows_of(tmp_path / "run")
    assert header["reference"] is None and "kl" not in row


def test_lora_reference_is_the_adapter_switched_off_and_export_is_merged(model_dir, tmp_path):
    from peft import PeftModel
    from transformers import JanusForConditionalGeneration

    cfg = tiny_config(model_dir, "mc", ["model.lora_r=4", "model.lora_alpha=8", "grpo.beta=0.05", "train.max_steps=2",
                                       "rewards.mm2t_reward_funcs=[test_answer_length]", "rewards.mm2t_reward_weights=[1.0]"])
    result = train(cfg, tmp_path / "run")
    header, rows = rows_of(tmp_path / "run")
    assert header["reference"] == "adapters_off" and rows[1]["kl"] > 0
    ckpt = result.final_checkpoint
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file()
    # The exported weights are base + adapter merged: a plain transformers load equals base + peft adapter.
    merged = JanusForConditionalGeneration.from_pretrained(ckpt).eval()
    adapted = PeftModel.from_pretrained(JanusForConditionalGeneration.from_pretrained(model_dir), ckpt / "adapter").eval()
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    with torch.no_grad():
        a = merged.model.language_model(input_ids=ids).last_hidden_state
        b = adapted.base_model.model.model.language_model(input_ids=ids).last_hidden_state
        base = JanusForConditionalGeneration.from_pretrained(model_dir).model.language_model(input_ids=ids).last_hidden_state
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, base, atol=1e-5)  # the adapters did learn something
    frozen = [k for k in weights(model_dir) if k.startswith(FROZEN_PREFIXES)]
    assert all(torch.equal(weights(model_dir)[k], weights(ckpt)[k]) for k in frozen)


# ---------------------------------------------------------------------------------- masked rewards


def test_nan_reward_is_masked_not_fatal(model_dir, tmp_path):
    cfg = tiny_config(model_dir, "oe", ["rewards.mm2t_reward_funcs=[test_nan_odd]", "rewards.mm2t_reward_weights=[1.0]"])
    result = train(cfg, tmp_path / "run")
    assert result.final_checkpoint is not None
    _, (row,) = rows_of(tmp_path / "run")
    rows = cfg.train.per_device_batch_size * cfg.rollout.num_generations
    assert row["reward_masked/mm2t"] == rows // 2  # every odd row
    assert row["rewards/mm2t/test_nan_odd/failed"] == rows // 2
    assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])
    # With G = 2 one masked row leaves one valid reward per group: no spread, no signal, no NaN.
    assert row["frac_reward_zero_std"] == 1.0 and row["advantages/mm2t/abs_mean"] == 0.0


# --------------------------------------------------------------------------------- observability


REQUIRED_KEYS = [
    "step", "epoch", "reward/t2i/mean", "reward/mm2t/mean", "rewards/t2i/cycle/mean", "rewards/t2i/cycle/std",
    "rewards/t2i/tim/mean", "rewards/t2i/cycle/visual/mean", "rewards/t2i/cycle/text/mean", "rewards/mm2t/accuracy/mean",
    "rewards/mm2t/format/std", "advantages/t2i/abs_mean", "advantages/mm2t/abs_mean", "frac_reward_zero_std",
    "clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean", "entropy/t2i", "entropy/mm2t",
    "grad_norm", "learning_rate", "loss/t2i", "loss/mm2t", "loss", "reward_masked/t2i", "reward_masked/mm2t",
    "completions/mm2t/mean_length", "completions/mm2t/clipped_ratio", "time/image_rollout", "time/text_rollout",
    "time/rewards", "time/logps", "time/update", "time/step",
]


def test_metrics_summary_samples_and_config_files(model_dir, tmp_path, capsys, monkeypatch):
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    tracker_class = recording_tracker_class()
    monkeypatch.setitem(LOGGER_TYPE_TO_CLASS, tracker_class.name, tracker_class)
    out = tmp_path / "run"
    cfg = tiny_config(model_dir, "unified", ["train.max_steps=2", "train.sample_steps=1", "train.log_rollouts=true",
                                            "train.report_to=[recording]",
                                            "optim.warmup_ratio=0.5", "optim.lr_scheduler=linear",
                                            "train.eval_steps=2", "train.eval_max_rows=2",
                                            # the paper's R_cycle (both halves are logged)
                                            "rewards.t2i_reward_funcs=[cycle,tim]"])
    result = train(cfg, out)
    header, rows = rows_of(out)
    assert header["image_logps"] == "cfg" and header["image_logps_cfg_weight"] == cfg.rollout.cfg_weight
    assert [r["step"] for r in rows] == [1, 2]
    missing = [k for k in REQUIRED_KEYS if k not in rows[0]]
    assert not missing, f"metrics lack {missing}"
    assert rows[0]["epoch"] == pytest.approx(1 / 8)  # 16 rows, B=2 per step: 8 steps per epoch
    # Warmup over the first step, then linear decay: lr 0 -> peak -> ...
    assert rows[0]["learning_rate"] == 0.0 and rows[1]["learning_rate"] == pytest.approx(cfg.optim.learning_rate)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == result.summary and summary["final_checkpoint"] == str(out / "checkpoint-2")
    joint = ["joint"] if cfg.grpo.unified_mode == "joint_reward" else []  # the joint sum exists in that mode only
    assert set(summary["reward"]) == {"t2i", "mm2t", *joint}
    for task in ("t2i", "mm2t", *joint):
        s = summary["reward"][task]
        assert s["first"] == pytest.approx(rows[0][f"reward/{task}/mean"])
        assert s["last"] == pytest.approx(rows[1][f"reward/{task}/mean"])
    assert "reward/t2i: first" in capsys.readouterr().out
    from corl.config import load_config

    assert load_config(out / "config.yaml") == cfg
    assert (out / "samples" / "step-000001.png").is_file() and (out / "samples" / "step-000002.jsonl").is_file()
    with Image.open(out / "samples" / "step-000001.png") as sheet:
        assert sheet.size[0] > 100
    answers = [json.loads(line) for line in (out / "samples" / "step-000001.jsonl").read_text().splitlines()]
    assert len(answers[0]["answers"]) == cfg.rollout.num_generations and "accuracy" in answers[0]["answers"][0]
    rollouts = [json.loads(line) for line in (out / "rollouts" / "rank0.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rollouts] == [1, 2] and rollouts[0]["indices"] != rollouts[1]["indices"]
    # In-training evaluation on the held-out Shapes split at step 2 only.
    assert "eval/t2i.overall" in rows[1] and not any(k.startswith("eval/") for k in rows[0])
    assert json.loads((out / "eval" / "step-000002.json").read_text())["settings"]["n_rows"] == 2
    # train.report_to: the tracker got the config, every logged row, and each step's sheet and answers
    tracker = tracker_class.last
    assert tracker.config["stage"] == "unified" and tracker.finished
    assert [step for step, _ in tracker.scalars] == [1, 2]
    assert tracker.scalars[1][1]["reward/t2i/mean"] == pytest.approx(rows[1]["reward/t2i/mean"])
    assert [(step, list(images)) for step, images in tracker.images] == [(1, ["samples/t2i"]), (2, ["samples/t2i"])]
    assert [(step, name, len(data)) for step, name, _, data in tracker.tables] == [
        (step, "samples/mm2t", len(answers) * cfg.rollout.num_generations) for step in (1, 2)]
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, out)


def test_a_run_without_any_usable_reward_stops_with_a_clear_error(model_dir, tmp_path, capsys):
    """Every reward NaN: zero advantages, nothing learned. The run stops after MAX_STEPS_WITHOUT_REWARDS
    rollout batches, with one line naming the task and its rewards, instead of exiting 0."""
    from corl.cli import main
    from corl.trainer import MAX_STEPS_WITHOUT_REWARDS
    from corl.training.testing import TINY_OVERRIDES

    out = tmp_path / "run"
    code = main(["train", "shapes-tiny/mc", "--out", str(out), f"model.name_or_path={model_dir}", *TINY_OVERRIDES,
                 "rewards.mm2t_reward_funcs=[test_all_nan]", "rewards.mm2t_reward_weights=[1.0]",
                 "train.max_steps=10", "train.save_steps=1"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"no usable mm2t reward in {MAX_STEPS_WITHOUT_REWARDS} rollout batches in a row (rewards: test_all_nan)" in err
    assert "Traceback" not in err
    rows = read_metrics(out / "metrics.jsonl")[1]
    assert len(rows) == MAX_STEPS_WITHOUT_REWARDS - 1  # stopped at the third batch, before its update


def test_a_non_finite_gradient_stops_before_the_weights_change(model_dir, tmp_path, monkeypatch):
    from accelerate import Accelerator

    from corl.errors import RunFailed

    cfg = tiny_config(model_dir, "t2i", ["train.max_steps=2", "train.save_steps=1"])
    calls = []

    def nan_norm(self, parameters, max_norm):
        calls.append(1)
        return torch.tensor(float("nan")) if len(calls) == 2 else torch.tensor(1.0)

    monkeypatch.setattr(Accelerator, "clip_grad_norm_", nan_norm)
    with pytest.raises(RunFailed, match="the gradient norm is nan at data step 1"):
        train(cfg, tmp_path / "run")
    first = weights(tmp_path / "run" / "checkpoint-1")
    assert all(torch.isfinite(t).all() for t in first.values())  # the step-1 checkpoint is intact
