"""Merging two refined checkpoints (the MC- and the OE-refined policy) into one model.

The paper merges its two understanding policies from stage 2 for mixed-format benchmarks ("Gaussian
weight merging") without giving the rule in the text we could consult; the authors' code (mm-vl/ULM-R1,
`utils.py`: `weight_merging_gaussian(model_1, model_2, ptw, lamda=2)`) defines it, and this module
follows that rule (re-implemented, not copied):

- Task vectors per tensor: d_a = theta_a - theta_base, d_b = theta_b - theta_base.
- Each task vector's entries are treated as Gaussian: mean mu_a, std sigma_a (and mu_b, sigma_b).
- A band around the shared centre mu = (mu_a + mu_b) / 2 with half-width lam * min(sigma_a, sigma_b)
  (lam = 2 upstream) separates the bulk of small, noisy updates from the salient ones.
- Inside the band an entry is averaged (weight alpha for A, 1 - alpha for B; upstream 0.5 / 0.5);
  outside it the entry is kept whole. Both task vectors' contributions are added:
      theta = theta_base + sum_k [ d_k * outside_k + w_k * d_k * inside_k ],  w_a = alpha, w_b = 1 - alpha.
  So an update that one policy made strongly and the other did not survives at full strength instead of
  being halved, which is the point of the rule. With alpha = 0.5 this is exactly the upstream rule.
- Choices where upstream is silent: the std is the unbiased one (torch default, as upstream); a tensor
  with fewer than 2 entries has sigma = 0 (empty band: its updates are added); the band is open
  (strict inequalities, as upstream), so frozen tensors (d = 0 everywhere) come back as the base.

`average` is plain linear interpolation, theta = alpha * theta_a + (1 - alpha) * theta_b (no base needed;
a base given anyway is only checked for matching keys).

Plumbing choices:
- Checkpoints are `save_pretrained` directories with safetensors weights (one `model.safetensors`, or
  shards with `model.safetensors.index.json`). Tensors are read one at a time (memory: one output
  shard at a time), and the output keeps A's shard layout and file metadata.
- Keys and shapes must match across A, B (and the base); dtypes may differ (maths in float32 or
  float64, results cast to A's dtype). Non-floating tensors (integer buffers) must be equal and are copied.
- Every other top-level file of A (config, generation config, tokenizer / processor files, chat template)
  is copied; weights in other formats and trainer state are not. A `corl_merge.json` records the merge.
- The output is written to a temporary sibling directory and renamed into place, so a crash never
  leaves a half-written model at `out`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("average", "gaussian")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
RECORD_FILE = "corl_merge.json"
# Files of a checkpoint directory that are never copied to the merged model: other weight formats and
# trainer state (optimizer, scheduler, RNG) that belongs to one training run, not to the merged weights.
SKIPPED_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")
SKIPPED_NAMES: frozenset[str] = frozenset(
    {INDEX_FILE, "pytorch_model.bin.index.json", "trainer_state.json", RECORD_FILE}
)


# ---------------------------------------------------------------------------------------------------
# Math (pure tensor functions)
# ---------------------------------------------------------------------------------------------------


def average_tensors(a: torch.Tensor, b: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """alpha * a + (1 - alpha) * b, computed in float32 (float64 kept), same shape as a."""
    work = _work_dtype(a, b)
    return alpha * a.to(work) + (1.0 - alpha) * b.to(work)


def _std(x: torch.Tensor) -> torch.Tensor:
    """Unbiased std of all entries (as upstream); 0 for fewer than two entries."""
    import torch

    if x.numel() < 2:
        return torch.zeros((), dtype=x.dtype)
    return x.std()


def gaussian_band(
    d_a: torch.Tensor, d_b: torch.Tensor, lam: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(centre, half-width) of the band of 'ordinary' task-vector entries: the mean of the two means,
    lam times the smaller of the two stds (both 0-d tensors)."""
    import torch

    centre = (d_a.mean() + d_b.mean()) / 2
    half_width = lam * torch.minimum(_std(d_a), _std(d_b))
    return centre, half_width


def gaussian_merge_tensors(
    a: torch.Tensor, b: torch.Tensor, base: torch.Tensor, alpha: float = 0.5, lam: float = 2.0
) -> tuple[torch.Tensor, float]:
    """Gaussian weight merging of one tensor (module docstring), in float32 (float64 kept).

    Returns (merged, fraction of the task-vector entries of A and B together that fell inside the band).
    """
    import torch

    work = _work_dtype(a, b, base)
    base_w = base.to(work)
    d_a, d_b = a.to(work) - base_w, b.to(work) - base_w  # task vectors, same shape as the tensor
    centre, half_width = gaussian_band(d_a, d_b, lam)
    inside_a = (d_a > centre - half_width) & (d_a < centre + half_width)  # bool, same shape
    inside_b = (d_b > centre - half_width) & (d_b < centre + half_width)
    # Per-entry weights: 1 outside the band; alpha (A) and 1 - alpha (B) inside it.
    weight_a = torch.where(inside_a, alpha, 1.0).to(work)
    weight_b = torch.where(inside_b, 1.0 - alpha, 1.0).to(work)
    merged = base_w + weight_a * d_a + weight_b * d_b
    inside_fraction = float(inside_a.sum() + inside_b.sum()) / max(2 * a.numel(), 1)
    return merged, inside_fraction


def _work_dtype(*tensors: torch.Tensor) -> torch.dtype:
    import torch

    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


# ---------------------------------------------------------------------------------------------------
# Reading checkpoints
# ---------------------------------------------------------------------------------------------------


class Checkpoint:
    """The safetensors weights of one save_pretrained directory: key -> file, read lazily."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory).expanduser()
        if not self.directory.is_dir():
            raise FileNotFoundError(f"checkpoint directory not found: {self.directory}")
        self.weight_map = self._weight_map()  # key -> file name (relative to directory)
        self._handles: dict[str, Any] = {}

    def _weight_map(self) -> dict[str, str]:
        from safetensors import safe_open

        index = self.directory / INDEX_FILE
        if index.is_file():
            data = json.loads(index.read_text())
            if not isinstance(data.get("weight_map"), dict) or not data["weight_map"]:
                raise ValueError(f"{index} has no weight_map")
            missing = sorted({f for f in data["weight_map"].values() if not (self.directory / f).is_file()})
            if missing:
                raise FileNotFoundError(
                    f"{self.directory}: shard files listed in {INDEX_FILE} are missing: {missing}"
                )
            return dict(data["weight_map"])
        single = self.directory / SINGLE_FILE
        if single.is_file():
            with safe_open(str(single), framework="pt") as handle:
                return dict.fromkeys(handle.keys(), SINGLE_FILE)
        others = sorted(p.name for p in self.directory.iterdir() if p.suffix in (".bin", ".pt", ".pth"))
        hint = (
            f" (found {', '.join(others)}: re-save with save_pretrained(safe_serialization=True))"
            if others
            else ""
        )
        raise FileNotFoundError(f"{self.directory} has no {SINGLE_FILE} or {INDEX_FILE}{hint}")

    def keys(self) -> list[str]:
        return list(self.weight_map)

    def files(self) -> list[str]:
        """Weight files in first-appearance order of their keys."""
        return list(dict.fromkeys(self.weight_map.values()))

    def _handle(self, file_name: str) -> Any:
        from safetensors import safe_open

        if file_name not in self._handles:
            self._handles[file_name] = safe_open(str(self.directory / file_name), framework="pt")
        return self._handles[file_name]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handle(self.weight_map[key]).get_slice(key).get_shape())

    def tensor(self, key: str) -> torch.Tensor:
        return self._handle(self.weight_map[key]).get_tensor(key)

    def metadata(self, file_name: str) -> dict[str, str] | None:
        return self._handle(file_name).metadata()

    def close(self) -> None:
        self._handles.clear()


def check_compatible(named: dict[str, Checkpoint]) -> None:
    """Raise ValueError naming the differences when the checkpoints' keys or shapes disagree."""
    (ref_name, ref), *others = named.items()
    ref_keys = set(ref.keys())
    problems: list[str] = []
    for name, other in others:
        keys = set(other.keys())
        only_ref, only_other = sorted(ref_keys - keys), sorted(keys - ref_keys)
        if only_ref:
            problems.append(f"{len(only_ref)} keys of {ref_name} missing from {name}: {_few(only_ref)}")
        if only_other:
            problems.append(f"{len(only_other)} keys of {name} missing from {ref_name}: {_few(only_other)}")
        shapes = [
            f"{k} {ref.shape(k)} vs {other.shape(k)}"
            for k in sorted(ref_keys & keys)
            if ref.shape(k) != other.shape(k)
        ]
        if shapes:
            problems.append(f"{len(shapes)} shape mismatches between {ref_name} and {name}: {_few(shapes)}")
    if problems:
        raise ValueError("checkpoints cannot be merged: " + "; ".join(problems))


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n})" if len(items) > n else "")


# ---------------------------------------------------------------------------------------------------
# Merging directories
# ---------------------------------------------------------------------------------------------------


@dataclass
class MergeReport:
    """What a merge did. inside_fraction: for gaussian, the share of task-vector entries averaged
    (the rest were added whole), over all floating tensors."""

    method: str
    alpha: float
    lam: float | None
    a: str
    b: str
    base: str | None
    out: str
    n_tensors: int = 0
    n_parameters: int = 0
    copied_nonfloat: int = 0
    inside_fraction: float | None = None
    copied_files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _merge_one(
    key: str, a: Checkpoint, b: Checkpoint, base: Checkpoint | None, method: str, alpha: float, lam: float
) -> tuple[torch.Tensor, float | None, bool]:
    """(merged tensor in A's dtype, inside fraction or None, whether it was a copied non-float tensor)."""
    ta, tb = a.tensor(key), b.tensor(key)
    if not (ta.is_floating_point() and tb.is_floating_point()):
        if ta.dtype != tb.dtype or not bool((ta == tb).all()):
            raise ValueError(
                f"non-floating tensor {key!r} ({ta.dtype}) differs between the checkpoints; "
                "it cannot be averaged"
            )
        return ta.clone(), None, True
    if method == "average":
        return average_tensors(ta, tb, alpha).to(ta.dtype), None, False
    assert base is not None
    merged, inside = gaussian_merge_tensors(ta, tb, base.tensor(key), alpha=alpha, lam=lam)
    return merged.to(ta.dtype), inside, False


def _iter_shards(a: Checkpoint) -> Iterator[tuple[str, list[str]]]:
    """(file name, its keys in order) for each of A's weight files."""
    for file_name in a.files():
        yield file_name, [k for k, f in a.weight_map.items() if f == file_name]


def _copy_side_files(src: Path, dst: Path) -> list[str]:
    copied = []
    for path in sorted(src.iterdir()):
        if not path.is_file() or path.name in SKIPPED_NAMES or path.suffix in SKIPPED_SUFFIXES:
            continue
        shutil.copy2(path, dst / path.name)
        copied.append(path.name)
    return copied


def merge_checkpoints(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    method: str = "average",
    alpha: float = 0.5,
    base: str | os.PathLike[str] | None = None,
    lam: float = 2.0,
    overwrite: bool = False,
) -> MergeReport:
    """Merge checkpoint directories `a` and `b` into `out` (module docstring).

    method: "average" (alpha * A + (1 - alpha) * B) or "gaussian" (needs `base`, the checkpoint both
    were refined from). alpha in [0, 1]. lam: band half-width in stds (gaussian). overwrite: replace
    an existing `out` (after the new one is complete).
    """
    from safetensors.torch import save_file

    if method not in METHODS:
        raise ValueError(f"unknown merge method {method!r}; valid: {', '.join(METHODS)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if method == "gaussian" and base is None:
        raise ValueError("gaussian merging needs --base: the checkpoint both models were refined from")
    if lam <= 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    out_path = Path(out).expanduser()
    if out_path.exists() and not overwrite:
        raise ValueError(f"output {out_path} already exists (pass --force to replace it)")
    ckpt_a, ckpt_b = Checkpoint(a), Checkpoint(b)
    ckpt_base = Checkpoint(base) if base is not None else None
    named = {"A": ckpt_a, "B": ckpt_b} | ({"base": ckpt_base} if ckpt_base is not None else {})
    check_compatible(named)
    if method == "average" and ckpt_base is not None:
        logger.info("average merging does not use the base checkpoint (only its keys were checked)")

    report = MergeReport(
        method=method,
        alpha=alpha,
        lam=lam if method == "gaussian" else None,
        a=str(ckpt_a.directory.resolve()),
        b=str(ckpt_b.directory.resolve()),
        base=str(ckpt_base.directory.resolve()) if ckpt_base else None,
        out=str(out_path),
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.parent / f".{out_path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    inside_weighted, float_entries = 0.0, 0
    try:
        from tqdm.auto import tqdm  # here: `corl --help` imports this module for METHODS

        progress = tqdm(total=len(ckpt_a.weight_map), desc=f"corl merge ({method})", unit="tensor")
        for file_name, keys in _iter_shards(ckpt_a):
            merged: dict[str, Any] = {}
            for key in keys:
                tensor, inside, copied = _merge_one(key, ckpt_a, ckpt_b, ckpt_base, method, alpha, lam)
                merged[key] = tensor.contiguous()
                report.n_tensors += 1
                report.n_parameters += tensor.numel()
                report.copied_nonfloat += int(copied)
                if inside is not None:
                    inside_weighted += inside * tensor.numel()
                    float_entries += tensor.numel()
                progress.update(1)
            save_file(merged, str(tmp / file_name), metadata=ckpt_a.metadata(file_name) or {"format": "pt"})
        progress.close()
        if (ckpt_a.directory / INDEX_FILE).is_file():
            shutil.copy2(ckpt_a.directory / INDEX_FILE, tmp / INDEX_FILE)
        report.copied_files = _copy_side_files(ckpt_a.directory, tmp)
        if method == "gaussian":
            report.inside_fraction = inside_weighted / float_entries if float_entries else None
        (tmp / RECORD_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        _replace_dir(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for ckpt in named.values():
            ckpt.close()
    logger.debug(  # the report is returned: the caller says what it needs of it (`corl merge` prints it)
        "merged %d tensors (%.2fM parameters) with %s into %s",
        report.n_tensors,
        report.n_parameters / 1e6,
        method,
        out_path,
    )
    return report


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` to `out`; an existing `out` is moved aside first and removed after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
