"""The reward registry and the weighted evaluation of a recipe's rewards on a batch.

A reward is a plain function `fn(prompts, completions, **columns) -> list[float | None]`, one value per
row (completions are answer strings for understanding rewards, PIL images for t2i rewards; `columns`
are the dataset columns expanded to one value per row, plus whatever the trainer passes, which a reward
ignores when it does not need it).

Every registered name maps to a FACTORY `factory(**options) -> fn`, called once when the trainer builds
its rewards: rewards that need models (captioners, BERTScore encoders, the policy) load them in the
factory, never inside the call (published code reloaded reward models every step). Option-free rewards
are registered with `register_function` and then take no options. The built-ins register themselves
when their modules are imported, which `corl/rewards/__init__.py` does: importing anything from
`corl.rewards` (this module included) imports that package first, so they are always registered here.

A reward fn may also set `fn.last_components = {name: list[float | None]}` on each call (the cycle
reward sets its visual and textual halves there); `RewardSet` logs them next to the reward itself.

None and NaN, the rule this module implements (`RewardSet.__call__`):
- None returned by a reward means "does not apply to this row" (e.g. MC accuracy on an open-ended row,
  no real image to compare with). The row's total is the weighted sum over the rewards that apply
  (TRL's nansum rule: weights are NOT renormalized); if none applies the total is None.
- NaN or +-inf returned by a reward is a FAILURE of a backend: it becomes None in the per-reward values,
  a warning is logged and `RewardBatch.num_failed[name]` (and `RewardSet.failure_counts`) count it.
  With `on_failure="mask"` (default) the row's total becomes None, so the trainer drops the row from its
  group statistics: a partial sum would make that completion look worse than its siblings for a reason
  that has nothing to do with its quality. With `on_failure="skip"` a failed value is treated like a
  None that does not apply.
- A trainer must treat a None total as a masked row (zero advantage, excluded from mean/std).
Exceptions raised by a reward (missing column, wrong types, wrong length) are configuration errors and
propagate: they must stop a run loudly rather than quietly zero a reward.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

RewardFn = Callable[..., list]  # fn(prompts, completions, **columns) -> list[float | None]


@dataclass(frozen=True)
class RewardEntry:
    """One registered reward: its factory and what building it needs."""

    name: str
    factory: Callable[..., RewardFn]
    needs_policy: bool = False  # building fails without a policy (a factory with a `policy` parameter
    # that does not need it always gets the policy or None)
    takes_options: bool = True
    description: str = ""
    fixed: tuple[str, ...] = ()  # factory parameters a recipe may not set (the registration fixes them)

    def options(self) -> list[str]:
        """Names of the options the factory accepts (the policy and the fixed parameters excluded)."""
        if not self.takes_options:
            return []
        params = inspect.signature(self.factory).parameters
        return [name for name in params if name != "policy" and name not in self.fixed]


_REGISTRY: dict[str, RewardEntry] = {}


def register_factory(
    name: str,
    factory: Callable[..., RewardFn],
    *,
    needs_policy: bool = False,
    description: str = "",
    fixed: tuple[str, ...] = (),
) -> Callable[..., RewardFn]:
    """Register `factory(**options) -> fn` under `name`; a duplicate name raises ValueError. `fixed`:
    parameters of the factory that keep their defaults (not recipe options)."""
    if name in _REGISTRY:
        raise ValueError(f"a reward named {name!r} is already registered")
    _REGISTRY[name] = RewardEntry(
        name, factory, needs_policy, True, description or (factory.__doc__ or ""), fixed=tuple(fixed)
    )
    return factory


def register_function(name: str, fn: RewardFn, *, description: str = "") -> RewardFn:
    """Register an option-free reward function under `name`; a duplicate name raises ValueError."""
    if name in _REGISTRY:
        raise ValueError(f"a reward named {name!r} is already registered")

    def factory() -> RewardFn:
        return fn

    _REGISTRY[name] = RewardEntry(name, factory, False, False, description or (fn.__doc__ or ""))
    return fn


def unregister(name: str) -> None:
    """Remove a registered reward (for tests and plugins that replace a built-in)."""
    get_entry(name)
    del _REGISTRY[name]


def reward_names() -> list[str]:
    """All registered reward names, sorted."""
    return sorted(_REGISTRY)


def get_entry(name: str) -> RewardEntry:
    """The entry registered under `name`; an unknown name raises KeyError listing the valid names."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown reward {name!r}; valid names: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def build_reward(name: str, *, policy: Any = None, **options: Any) -> RewardFn:
    """Build the reward `name` once with its backend `options` (and the policy when it needs one)."""
    entry = get_entry(name)
    accepted = entry.options()
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"reward {name!r} got unknown option(s) {unknown}; it accepts: {accepted or 'no options'}"
        )
    if entry.needs_policy and policy is None:
        raise ValueError(f"reward {name!r} needs the policy (pass policy=...)")
    if entry.takes_options and "policy" in inspect.signature(entry.factory).parameters:
        fn = entry.factory(policy=policy, **options)  # optional use, e.g. the cycle reward's 'self' captioner
    else:
        fn = entry.factory(**options)
    logger.info("built reward %s with options %s", name, options or "{}")
    return fn


# ----------------------------------------------------------------------------------------------------
# Evaluating a weighted set of rewards on one batch


@dataclass
class RewardBatch:
    """Rewards of one batch of N rows. Per-reward lists hold N entries each, in recipe order."""

    values: dict[str, list[float | None]]  # reward name -> per-row value, failures already None
    components: dict[str, list[float | None]]  # logged-only sub-values, e.g. "cycle_visual"
    weights: dict[str, float]
    total: list[float | None]  # weighted sum per row; None = masked row (see module docstring)
    num_none: dict[str, int] = field(default_factory=dict)  # Nones returned by the reward ("not applicable")
    num_failed: dict[str, int] = field(default_factory=dict)  # NaN/inf turned into None


class RewardSet:
    """A recipe's rewards with their weights, built once; calling it scores a batch (`RewardBatch`)."""

    def __init__(self, rewards: Sequence[tuple[str, RewardFn, float]], on_failure: str = "mask") -> None:
        if on_failure not in ("mask", "skip"):
            raise ValueError(f"on_failure must be 'mask' or 'skip', got {on_failure!r}")
        names = [name for name, _, _ in rewards]
        duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
        if duplicates:
            raise ValueError(f"reward(s) listed twice in one recipe: {duplicates}")
        if not rewards:
            raise ValueError("a RewardSet needs at least one reward")
        self.rewards = list(rewards)
        self.on_failure = on_failure
        self.failure_counts: Counter[str] = Counter()  # cumulative over calls, per reward / component

    @classmethod
    def from_recipe(
        cls,
        names: Sequence[str],
        weights: Sequence[float] | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        policy: Any = None,
        on_failure: str = "mask",
    ) -> RewardSet:
        """Build `reward_funcs` / `reward_weights` / per-reward backend options from a recipe.

        weights default to 1.0 each; `options` maps a reward name to its factory keyword arguments.
        """
        names = list(names)
        weights = [1.0] * len(names) if weights is None else [float(w) for w in weights]
        if len(weights) != len(names):
            raise ValueError(f"{len(names)} rewards {names} but {len(weights)} reward_weights")
        options = dict(options or {})
        stray = sorted(set(options) - set(names))
        if stray:
            raise ValueError(f"options given for reward(s) {stray} that are not in reward_funcs {names}")
        built = [
            (name, build_reward(name, policy=policy, **dict(options.get(name) or {})), w)
            for name, w in zip(names, weights)
        ]
        return cls(built, on_failure=on_failure)

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.rewards]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> RewardBatch:
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for {n} completions")
        values: dict[str, list[float | None]] = {}
        components: dict[str, list[float | None]] = {}
        failed_rows: list[bool] = [False] * n
        num_none: dict[str, int] = {}
        num_failed: dict[str, int] = {}
        for name, fn, _ in self.rewards:
            raw = fn(prompts, completions, **columns)
            values[name], failed = self._sanitize(name, raw, n)
            num_failed[name] = sum(failed)
            num_none[name] = sum(v is None for v in values[name]) - num_failed[name]
            failed_rows = [a or b for a, b in zip(failed_rows, failed)]
            for comp_name, comp_values in (getattr(fn, "last_components", None) or {}).items():
                components[comp_name], comp_failed = self._sanitize(comp_name, comp_values, n)
                num_failed[comp_name] = sum(comp_failed)
        total: list[float | None] = []
        for row in range(n):
            if failed_rows[row] and self.on_failure == "mask":
                total.append(None)
                continue
            parts = [w * values[name][row] for name, _, w in self.rewards if values[name][row] is not None]
            total.append(sum(parts) if parts else None)
        weights = {name: w for name, _, w in self.rewards}
        return RewardBatch(values, components, weights, total, num_none, num_failed)

    def _sanitize(self, name: str, raw: Any, n: int) -> tuple[list[float | None], list[bool]]:
        """Check length and types; NaN/inf -> None with a logged, counted warning."""
        if not isinstance(raw, (list, tuple)) or len(raw) != n:
            got = len(raw) if isinstance(raw, (list, tuple)) else type(raw).__name__
            raise ValueError(f"reward {name!r} returned {got} values for {n} completions")
        clean: list[float | None] = []
        failed: list[bool] = []
        for value in raw:
            if value is None:
                clean.append(None)
                failed.append(False)
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                try:
                    value = float(value)  # numpy / 0-d torch scalars
                except (TypeError, ValueError):
                    raise TypeError(f"reward {name!r} returned a {type(value).__name__}, not a number")
            value = float(value)
            bad = not math.isfinite(value)
            clean.append(None if bad else value)
            failed.append(bad)
        if any(failed):
            self.failure_counts[name] += sum(failed)
            logger.warning(
                "reward %s: %d of %d values were NaN/inf (backend failure); set to None (%d so far)",
                name,
                sum(failed),
                n,
                self.failure_counts[name],
            )
        return clean, failed
