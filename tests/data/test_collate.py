import datasets
import numpy as np
import pytest
from PIL import Image

from corl.data.collate import EpochSampler, balanced_indices, collate_rows, sample_batch, strata_of
from corl.data.loading import load_rows


def epoch_indices(sampler: EpochSampler, epoch: int) -> list[int]:
    return [i for step in range(sampler.steps_per_epoch) for i in sampler.indices(epoch, step)]


def test_same_arguments_same_batch_and_seed_matters():
    a = EpochSampler(100, 4, seed=7, world_size=2, rank=1)
    b = EpochSampler(100, 4, seed=7, world_size=2, rank=1)
    assert [a.indices(3, s) for s in range(5)] == [b.indices(3, s) for s in range(5)]
    other_seed = EpochSampler(100, 4, seed=8, world_size=2, rank=1)
    assert epoch_indices(a, 0) != epoch_indices(other_seed, 0)
    assert epoch_indices(a, 0) != epoch_indices(a, 1)  # reshuffled every epoch


def test_no_repeats_within_an_epoch_and_drop_last():
    sampler = EpochSampler(103, 5, seed=0)
    seen = epoch_indices(sampler, 0)
    assert sampler.steps_per_epoch == 20
    assert len(seen) == len(set(seen)) == 100
    assert set(seen) <= set(range(103))
    # The 3 rows left out differ between epochs, so every row gets its turn.
    left_out = [set(range(103)) - set(epoch_indices(sampler, e)) for e in range(5)]
    assert len(set().union(*left_out)) > 3


def test_ranks_are_disjoint_and_cover_the_global_batch():
    world = 4
    samplers = [EpochSampler(64, 3, seed=1, world_size=world, rank=r) for r in range(world)]
    assert samplers[0].steps_per_epoch == 5  # 64 // 12
    for step in range(samplers[0].steps_per_epoch):
        batches = [s.indices(2, step) for s in samplers]
        flat = [i for batch in batches for i in batch]
        assert len(flat) == len(set(flat)) == 12
    whole_epoch = [i for s in samplers for i in epoch_indices(s, 2)]
    assert len(whole_epoch) == len(set(whole_epoch)) == 60
    # Rank 0 of a 4-rank run draws what a 1-rank run with the same global order draws first.
    single = EpochSampler(64, 12, seed=1)
    assert samplers[0].indices(2, 0) == single.indices(2, 0)[:3]


def test_stratified_order_spreads_each_label_evenly():
    # 3 labels in proportion 3 : 2 : 1 (60 rows), 6 rows a step.
    labels = tuple([0] * 30 + [1] * 20 + [2] * 10)
    sizes = np.array([30, 20, 10])
    bound = 1 + 3 * sizes / 60  # _stratified_order's guarantee: 1 + L n / N

    def worst_excess(order):  # max over prefixes and labels of |count - share| / bound
        onehot = np.eye(3)[[labels[i] for i in order]]  # [60, 3]
        shares = np.arange(1, 61)[:, None] * sizes / 60
        return float((np.abs(onehot.cumsum(0) - shares) / bound).max())

    sampler = EpochSampler(60, 6, seed=3, strata=labels)
    for epoch in range(3):
        order = epoch_indices(sampler, epoch)
        assert sorted(order) == list(range(60))  # still a permutation: nothing dropped or repeated
        assert worst_excess(order) <= 1.0
    plain = epoch_indices(EpochSampler(60, 6, seed=3), 0)
    assert worst_excess(plain) > 1.0  # a plain shuffle of the same seed strays beyond the bound
    assert epoch_indices(sampler, 0) != epoch_indices(sampler, 1)  # reshuffled every epoch
    assert epoch_indices(sampler, 0) == epoch_indices(EpochSampler(60, 6, seed=3, strata=labels), 0)
    assert epoch_indices(sampler, 0) != epoch_indices(EpochSampler(60, 6, seed=4, strata=labels), 0)


def test_stratified_ranks_stay_disjoint():
    labels = tuple(i % 4 for i in range(48))
    samplers = [EpochSampler(48, 3, seed=0, world_size=2, rank=r, strata=labels) for r in range(2)]
    both = epoch_indices(samplers[0], 1) + epoch_indices(samplers[1], 1)
    assert sorted(both) == list(range(48))


def test_strata_of_a_column_and_a_missing_one():
    ds = datasets.Dataset.from_dict({"category": ["a", "b", "a", "c"], "question_type": ["mc", "mc", "oe", "mc"]})
    assert strata_of(ds, ["category"]) == (0, 1, 0, 2)
    assert strata_of(ds, ["category", "question_type"]) == (0, 1, 2, 3)
    with pytest.raises(ValueError, match=r"\['kind'\] not among"):
        strata_of(ds, ["category", "kind"])
    with pytest.raises(ValueError, match="3 labels for 4 rows"):
        EpochSampler(4, 2, strata=(0, 1, 0))


def test_global_step_position():
    sampler = EpochSampler(10, 3, seed=0)  # 3 steps per epoch
    assert sampler.position(0) == (0, 0)
    assert sampler.position(4) == (1, 1)
    assert sampler.indices_at(4) == sampler.indices(1, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="fewer than one step needs"):
        EpochSampler(5, 3, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(50, 3, world_size=2, rank=2)
    with pytest.raises(ValueError, match="step must be in"):
        EpochSampler(10, 3).indices(0, 3)


def test_collate_returns_python_lists_with_rgb_images(image_dir):
    rows = [
        {"prompt": f"p{i}", "image": str(image_dir["rgba" if i % 2 else "good"]), "question": "q",
         "solution": "<answer>a</answer>", "question_type": "oe", "category": i}
        for i in range(6)
    ]
    loaded = load_rows(datasets.Dataset.from_list(rows))
    batch = collate_rows(loaded.dataset, [4, 1, 3])
    assert isinstance(batch, dict) and all(isinstance(v, list) for v in batch.values())
    assert batch["prompt"] == ["p4", "p1", "p3"]
    assert batch["category"] == [4, 1, 3]
    assert all(isinstance(im, Image.Image) and im.mode == "RGB" for im in batch["image"])
    only = collate_rows(loaded.dataset, [0], columns=["prompt"])
    assert only == {"prompt": ["p0"]}


def test_collate_decodes_raw_image_values(image_dir):
    table = datasets.Dataset.from_dict({"image": [image_dir["gray"].read_bytes()], "prompt": ["x"]})
    batch = collate_rows(table, [0])
    assert batch["image"][0].mode == "RGB"
    expected = np.asarray(Image.open(image_dir["gray"]))
    assert np.array_equal(np.asarray(batch["image"][0])[..., 1], expected)


def test_sample_batch_matches_sampler():
    table = datasets.Dataset.from_dict({"prompt": [f"p{i}" for i in range(20)]})
    batch = sample_batch(table, 4, epoch=1, step=1, seed=3, rank=1, world_size=2)
    expected = EpochSampler(20, 4, seed=3, world_size=2, rank=1).indices(1, 1)
    assert batch["prompt"] == [f"p{i}" for i in expected]


def test_balanced_indices_give_every_label_its_share():
    strata = [i % 12 for i in range(300)]  # the Shapes test split: 6 categories x 2 question types
    chosen = balanced_indices(strata, 48)
    assert chosen == sorted(set(chosen)) and len(chosen) == 48
    assert np.bincount([strata[i] for i in chosen]).tolist() == [4] * 12
    assert balanced_indices(strata, 48) == chosen  # the same rows at every evaluation
    assert balanced_indices(strata, 48, seed=1) != chosen


def test_balanced_indices_when_labels_run_out():
    strata = [0] * 10 + [1]  # label 1 has one row: the rest come from label 0
    chosen = balanced_indices(strata, 4)
    assert 10 in chosen and len(chosen) == 4
    assert balanced_indices([0, 1], 5) == [0, 1]  # never more rows than there are
