"""Fast autoregressive decoding for the rollouts: preallocated KV cache, shared prefill, lean decode step.

Measured in `benchmarks/rollout.py` against the straightforward loop (transformers' DynamicCache grown by
one token per step through `LlamaModel.forward`); each piece removes work that loop does per step:

- `PreallocatedCache`: one key and one value buffer per layer, allocated once for prompt + new tokens.
  A step writes its slot in place and attention reads a view of the filled part only. (DynamicCache
  copies the whole cache every step with torch.cat; transformers' StaticCache avoids the copy but
  attends over the full preallocated length from the first step on.)
- `shared_prefill`: rows whose prompts are identical (the G samples of one prompt; CFG unconditional
  rows of prompts with the same padding) run the prompt forward once; their keys and values are copied
  to every row that shares them.
- `DecodeStep`: the rotary cos/sin of every future position and the padding mask are computed once per
  rollout. Each step runs the decoder layers from their own transformers submodules (RMSNorm, q/k/v/o
  projections, `apply_rotary_pos_emb`, the configured attention function, MLP) in the order
  `LlamaDecoderLayer.forward` uses, without `LlamaModel.forward`'s per-call mask building, rotary
  recomputation and output plumbing. Same ops, same order: tokens are bitwise equal to the model's own
  forward (tested). Anything but Llama decoder layers with sdpa/eager attention and default RoPE takes
  the generic path: the model's forward with our cache.
- `decode_threads`: optionally (`DecodingConfig.single_thread_below`, off by default) a CPU decode step of
  a tiny model runs on one intra-op thread, for machines where a 2-thread region waits on descheduled
  threads.
- `StaticDecoder` (`compile_decode=True` in the rollouts): the same step with the same
  shapes at every step (attention over the whole buffer with later slots masked, the step index a
  tensor), kept per shape for the LLM and compiled at its first step (`corl.generation.step_compiler`:
  AOTInductor on CPU, torch.compile with CUDA graphs on GPU); prompts are left-padded to a multiple of
  `prompt_bucket(max_new)` so a compiled graph is reused. Equal to the dynamic path up to float rounding.
  On CPU its attention is `single_query_attention` (multiply + sum, fused by the compiler) instead of
  SDPA's flash kernel, whose per-call cost exceeds a small layer's matmuls. Image rollouts put the code
  embedding before the step and the generation head, CFG and the draw of the next code after it, all in
  the graph (one graph per code instead of a graph between two dozen eager ops).

`start_decoding` puts prefill and step together. All of it runs without autograd (callers use
torch.inference_mode). The rollouts run their eager steps inside `cpu_linear.onednn_linears`: on CPU, large
float32 linears go through oneDNN instead of MKL, so at that size the tokens equal the model's own forward
up to float rounding, not bitwise.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaModel,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from corl.generation.step_compiler import compile_decoder
from corl.policy.logits import additive_mask, positions_from_mask

logger = logging.getLogger(__name__)

# LlamaModel.forward's keyword for the KV cache: `cache` in newer transformers 5.x, which deprecate
# `past_key_values` (removal announced for 5.40); older 5.x releases only know `past_key_values`.
CACHE_KWARG = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"
FAST_ATTENTION = ("sdpa", "eager")  # attention implementations the lean step reproduces exactly


def single_thread_decode(
    step_macs: int, below: int, device: torch.device, *, compiled: bool = False
) -> bool:
    """Whether `decode_threads` drops to one thread: an eager CPU step whose largest matmul (step_macs =
    rows x hidden x intermediate multiply-adds) is under `below` (0: never), with more than one thread to
    drop. Whether that pays depends on the machine: on a loaded shared CPU a 2-thread region can wait for
    a descheduled thread. A compiled step keeps every thread: its fused loops gain from them."""
    return (
        device.type == "cpu"
        and not compiled
        and torch.get_num_threads() > 1
        and step_macs < below
    )


@contextmanager
def decode_threads(step_macs: int, below: int, device: torch.device, *, compiled: bool = False) -> Iterator[None]:
    """Run a decode loop on one intra-op thread when `single_thread_decode` says so; restores the
    caller's thread count afterwards."""
    if not single_thread_decode(step_macs, below, device, compiled=compiled):
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------ cache


class PreallocatedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys/values are views into buffers allocated once.

    Buffers [b, kv_heads, capacity, head_dim]; `keys`/`values` are the filled part [b, kv_heads, length,
    head_dim], so transformers' mask sizing (`get_seq_length`, `get_mask_sizes`) works unchanged.
    """

    def __init__(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor) -> None:
        super().__init__()
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        self.dtype, self.device = key_buffer.dtype, key_buffer.device
        self.length = 0
        self.keys, self.values = key_buffer[:, :, :0], value_buffer[:, :, :0]
        self.is_initialized = True

    @property
    def capacity(self) -> int:
        return self.key_buffer.shape[2]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None  # allocated in __init__

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write [b, kv_heads, s, head_dim] after the filled part; return the filled views."""
        start, end = self.length, self.length + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"KV cache full: {end} positions needed, {self.capacity} allocated")
        self.key_buffer[:, :, start:end].copy_(key_states)
        self.value_buffer[:, :, start:end].copy_(value_states)
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def reset(self) -> None:
        self.length = 0
        self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]


class PreallocatedCache(Cache):
    """A transformers `Cache` of `PreallocatedLayer`s for `batch_size` rows and `capacity` positions."""

    def __init__(
        self,
        config,
        batch_size: int,
        capacity: int,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (batch_size, config.num_key_value_heads, capacity, head_dim)
        layers = [
            PreallocatedLayer(  # uninitialized: only written slots are ever read
                torch.empty(shape, dtype=dtype, device=device), torch.empty(shape, dtype=dtype, device=device)
            )
            for _ in range(config.num_hidden_layers)
        ]
        super().__init__(layers=layers)

    def write_prefix(self, prefix: Cache, rows: torch.Tensor) -> None:
        """Fill the first positions of every row from `prefix` (a cache over U distinct prompts):
        row i gets prefix row rows[i]. rows: [b] long indices into the U prefix rows."""
        for layer, source in zip(self.layers, prefix.layers, strict=True):
            layer.reset()
            layer.update(source.keys.index_select(0, rows), source.values.index_select(0, rows))


# ---------------------------------------------------------------------------------------- prefill


def distinct_rows(*columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows that are equal in every column tensor ([b, *] each) are computed once.

    -> (first [U] long: a representative row of each distinct prompt, inverse [b] long: for every row the
    index of its representative in `first`).
    """
    if any(column.is_floating_point() or column.is_complex() for column in columns):
        raise TypeError("distinct_rows compares integer tensors (token ids, masks), not floats")
    key = torch.cat([column.reshape(column.shape[0], -1).long() for column in columns], dim=1)  # [b, K]
    _, inverse = torch.unique(key, dim=0, return_inverse=True)  # [b] in 0..U-1
    count = int(inverse.max()) + 1
    first = torch.full((count,), key.shape[0], dtype=torch.long, device=key.device)
    first.scatter_reduce_(0, inverse, torch.arange(key.shape[0], device=key.device), reduce="amin")
    return first, inverse


def shared_prefill(
    language_model: LlamaModel,
    cache: PreallocatedCache | StaticDecoder,
    inputs_embeds: torch.Tensor,  # [U, P, D] the distinct prompts
    attention_mask: torch.Tensor,  # [U, P]
    rows: torch.Tensor,  # [b] long: distinct prompt of each cache row
) -> torch.Tensor:
    """Run the prompt forward once per distinct prompt, copy keys/values into every row of `cache`.

    -> last prompt hidden state of every row [b, D] (after the final norm). Positions count from each
    row's first real token (`positions_from_mask`), as in scoring.
    """
    prefix = DynamicCache(config=language_model.config)
    out = language_model(
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        position_ids=positions_from_mask(attention_mask),
        **{CACHE_KWARG: prefix},
        use_cache=True,
    )
    cache.write_prefix(prefix, rows)
    return out.last_hidden_state[:, -1].index_select(0, rows)  # [b, D]


# ------------------------------------------------------------------------------------ decode step


def fast_path_available(language_model: torch.nn.Module) -> bool:
    """True when every decoder layer is a Llama layer the lean step reproduces exactly (wrappers that keep
    Llama's forward, such as FSDP2's shard units, included)."""
    config = language_model.config
    rotary = getattr(language_model, "rotary_emb", None)
    return (
        isinstance(language_model, LlamaModel)
        and all(
            isinstance(layer, LlamaDecoderLayer)
            # a subclass made by a wrapper re-wraps forward but keeps Llama's (its qualified name)
            and type(layer).forward.__qualname__ == LlamaDecoderLayer.forward.__qualname__
            and type(layer.self_attn) is LlamaAttention
            for layer in language_model.layers
        )
        and config._attn_implementation in FAST_ATTENTION
        and rotary is not None
        and getattr(rotary, "rope_type", None) == "default"
    )


def _layer_step(
    layer: LlamaDecoderLayer,
    hidden: torch.Tensor,  # [b, 1, D]
    cos: torch.Tensor,  # [b, 1, head_dim]
    sin: torch.Tensor,
    mask: torch.Tensor | None,  # [b, 1, 1, L] or None
    write_kv: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    attention: Callable,
) -> torch.Tensor:
    """`LlamaDecoderLayer.forward` + `LlamaAttention.forward` for one new token, op for op."""
    attn = layer.self_attn
    input_shape = hidden.shape[:-1]  # [b, 1]
    hidden_shape = (*input_shape, -1, attn.head_dim)
    residual = hidden
    hidden = layer.input_layernorm(hidden)
    query = attn.q_proj(hidden).view(hidden_shape).transpose(1, 2)  # [b, heads, 1, head_dim]
    key = attn.k_proj(hidden).view(hidden_shape).transpose(1, 2)  # [b, kv_heads, 1, head_dim]
    value = attn.v_proj(hidden).view(hidden_shape).transpose(1, 2)
    query, key = apply_rotary_pos_emb(query, key, cos, sin)
    key, value = write_kv(key, value)  # [b, kv_heads, L, head_dim]
    out, _ = attention(attn, query, key, value, mask, dropout=0.0, scaling=attn.scaling)  # [b, 1, heads, hd]
    out = attn.o_proj(out.reshape(*input_shape, -1).contiguous())
    hidden = residual + out
    residual = hidden
    return residual + layer.mlp(layer.post_attention_layernorm(hidden))


class DecodeStep:
    """Feeds one token embedding per row through the LLM: `step(embeds [b, 1, D]) -> hidden [b, D]`.

    Built after the prefill: `prompt_mask` [b, P] is the prompts' attention mask (left padding),
    `max_new` the number of tokens that will be fed. Call it at most `max_new` times.
    fast=False forces the generic path (the model's forward with the preallocated cache).
    """

    def __init__(
        self,
        language_model: LlamaModel,
        cache: PreallocatedCache,
        prompt_mask: torch.Tensor,
        max_new: int,
        *,
        fast: bool = True,
    ) -> None:
        self.language_model = language_model
        self.cache = cache
        rows, self.prompt_len = prompt_mask.shape
        device = prompt_mask.device
        self.fast = fast and fast_path_available(language_model)
        self.step_index = 0
        self.max_new = max_new
        total = self.prompt_len + max_new
        self.full_mask = torch.ones(rows, total, dtype=prompt_mask.dtype, device=device)  # [b, P + new]
        self.full_mask[:, : self.prompt_len] = prompt_mask
        next_position = positions_from_mask(prompt_mask)[:, -1:] + 1  # [b, 1]
        self.positions = next_position + torch.arange(max(max_new, 1), device=device)  # [b, new]
        if not self.fast:
            logger.debug("decode: generic path (model forward per step)")
            return
        config = language_model.config
        # the hidden states' dtype (the cache may hold keys / values in a narrower compute dtype)
        dtype = language_model.get_input_embeddings().weight.dtype
        # [b, new, head_dim] each: the same values the model's rotary module gives one step at a time
        self.cos, self.sin = _rotary_table(language_model, self.positions, dtype)
        self.attention = ALL_ATTENTION_FUNCTIONS.get_interface(
            config._attn_implementation, eager_attention_forward
        )
        keep = self.full_mask.bool()[:, None, None, :]  # [b, 1, 1, P + new], True = attend
        if config._attn_implementation == "eager":
            self.mask = additive_mask(keep, dtype)  # transformers' eager mask
        else:  # sdpa: a boolean mask, none at all without padding (as transformers does)
            self.mask = None if bool(prompt_mask.bool().all()) else keep

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        step = self.step_index
        if step >= self.max_new:
            raise ValueError(f"DecodeStep was built for {self.max_new} tokens")
        self.step_index += 1
        end = self.prompt_len + step + 1
        if not self.fast:
            out = self.language_model(
                inputs_embeds=embeds,
                attention_mask=self.full_mask[:, :end],
                position_ids=self.positions[:, step : step + 1],
                **{CACHE_KWARG: self.cache},
                use_cache=True,
            )
            return out.last_hidden_state[:, -1]
        cos, sin = self.cos[:, step : step + 1], self.sin[:, step : step + 1]  # [b, 1, head_dim]
        mask = None if self.mask is None else self.mask[..., :end]
        hidden = embeds
        for layer, cache_layer in zip(self.language_model.layers, self.cache.layers, strict=True):
            hidden = _layer_step(layer, hidden, cos, sin, mask, cache_layer.update, self.attention)
        return self.language_model.norm(hidden)[:, -1]


def single_query_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [b, heads, 1, head_dim]
    key: torch.Tensor,  # [b, kv_heads, L, head_dim]
    value: torch.Tensor,  # [b, kv_heads, L, head_dim]
    attention_mask: torch.Tensor | None,  # [b, 1, 1, L] additive
    *,
    scaling: float,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, None]:
    """Attention of one new token over the cache as broadcast multiply + sum: -> ([b, 1, heads, head_dim],
    None), the attention-interface signature.

    Why: for one query row, CPU scaled_dot_product_attention runs its flash kernel (blocked for long
    queries) and a batched matmul runs b x heads separate tiny GEMMs; both cost 85-390 us per call for
    the Shapes model (32 rows, 4 heads, 32 dims, 100 slots), more than the layer's matmuls. Under
    torch.compile the products and sums here fuse into a few loops (`StaticDecoder` uses this on CPU).
    Same math as transformers' eager attention (softmax in float32 or wider), equal up to float rounding.
    """
    if dropout:
        raise ValueError("decode attention runs without dropout")
    rows, heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads  # grouped-query attention: `group` query heads share one key/value head
    query = query.reshape(rows, kv_heads, group, 1, head_dim)
    scores = (query * key[:, :, None]).sum(-1) * scaling  # [b, kv_heads, group, L]
    if attention_mask is not None:
        scores = scores + attention_mask.reshape(rows, 1, 1, -1)
    # float32 at least (bf16/fp16 models, as transformers' eager attention), float64 kept
    weights = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
    weights = weights.to(query.dtype)
    out = (weights[..., None] * value[:, :, None]).sum(-2)  # [b, kv_heads, group, head_dim]
    return out.reshape(rows, 1, heads, head_dim), None


def _rotary_table(
    language_model: LlamaModel, positions: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [b, n, head_dim] for position ids [b, n] from the model's own rotary module."""
    probe = torch.empty(1, dtype=dtype, device=positions.device)
    cos, sin = language_model.rotary_emb(probe, position_ids=positions)
    return cos.contiguous(), sin.contiguous()


# ----------------------------------------------------------------------- static shapes (compile)


def left_pad_to_multiple(mask: torch.Tensor, multiple: int, *tensors: torch.Tensor, pad_value: int = 0):
    """Left-pad a prompt batch to a length that is a multiple of `multiple`, so that static-shape
    decoders (and their compiled graphs) are reused across batches of slightly different length.

    mask [b, P] and each tensor [b, P, ...] -> the same, padded on the left (mask 0, tensors pad_value).
    Extra left padding changes nothing: it is masked, and positions count from the first real token.
    """
    extra = -mask.shape[1] % multiple
    if not extra:
        return (mask, *tensors)

    def pad(tensor: torch.Tensor, value) -> torch.Tensor:
        filler = tensor.new_full((tensor.shape[0], extra, *tensor.shape[2:]), value)
        return torch.cat([filler, tensor], dim=1)

    return (pad(mask, 0), *(pad(tensor, pad_value) for tensor in tensors))


class StaticDecoder(torch.nn.Module):
    """A decode step with the same shapes at every step, for compilation (`step_compiler`: AOTInductor on
    CPU, torch.compile with CUDA graphs on GPU).

    Buffers (registered, so compiled graphs see fixed addresses): keys/values per layer [b, kv_heads,
    capacity, head_dim] (in `kv_dtype`: the compute dtype under autocast), the additive attention mask
    [b, 1, 1, capacity] and rotary tables [b, capacity, head_dim]. Each step writes slot P + step in place
    and attends over the whole buffer with later slots masked. One decoder per (rows, capacity, dtypes,
    device) is kept in the caller's cache (the rollouts pass `JanusPolicy.static_decoders`) and reused by
    later rollouts (`StaticDecoder.get`), so a graph is compiled (captured) once and replayed: `start`
    it with the rows' prompt mask left-padded to a fixed bucket (`left_pad_to_multiple`), then write the
    (unpadded) prompt's keys/values, which fill the bucket's last slots. Results equal the dynamic path up to float
    rounding (masked slots add exact zeros, but the reductions run over a different length).
    """

    def __init__(
        self,
        language_model: LlamaModel,
        rows: int,
        capacity: int,
        dtype: torch.dtype,
        device: torch.device,
        *,
        kv_dtype: torch.dtype | None = None,
        embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
        head: Callable[[torch.Tensor], torch.Tensor] | None = None,
        weights: torch.nn.Module | None = None,
        cpu_compiler: str,
    ) -> None:
        super().__init__()
        if not fast_path_available(language_model):
            raise ValueError(
                "static decoding needs Llama decoder layers (sdpa/eager attention, default RoPE)"
            )
        object.__setattr__(self, "language_model", language_model)  # used, not owned: no submodule
        # Optional work before and after the LLM inside the same graph (see `start_decoding`)
        object.__setattr__(self, "embed", embed)
        object.__setattr__(self, "head", head)
        # the module owning every weight the step reads (the LLM's, and what embed / head use)
        object.__setattr__(self, "weights", weights if weights is not None else language_model)
        config = language_model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.cache_shape = (rows, config.num_key_value_heads, capacity, head_dim)
        # One buffer per layer, written in place with index_copy_: a write into a view of one buffer shared
        # by all layers is functionalized by torch.compile into a copy of the whole buffer per layer and
        # step, which then dominates the step.
        # zeros: unwritten slots are read (with weight exactly 0), so they must hold finite numbers.
        # Normal tensors even inside a rollout's inference mode: export (CPU compile) cannot trace
        # inference tensors.
        with torch.inference_mode(False):
            for index in range(config.num_hidden_layers):
                for kind in ("keys", "values"):
                    self.register_buffer(
                        f"{kind}_{index}", torch.zeros(self.cache_shape, dtype=kv_dtype or dtype, device=device),
                        persistent=False,
                    )
            self.register_buffer(
                "mask", torch.zeros(rows, 1, 1, capacity, dtype=dtype, device=device), persistent=False
            )
            self.register_buffer(
                "cos", torch.zeros(rows, capacity, head_dim, dtype=dtype, device=device), persistent=False
            )
            self.register_buffer(
                "sin", torch.zeros(rows, capacity, head_dim, dtype=dtype, device=device), persistent=False
            )
            self.register_buffer("slots", torch.arange(capacity, device=device), persistent=False)
        # CPU: one-query attention as multiply + sum (see single_query_attention); GPU: the model's own
        self.attention = (
            single_query_attention
            if torch.device(device).type == "cpu"
            else ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)
        )
        self.minimum = torch.finfo(dtype).min
        self.compile_requested = False  # compiled on the first step (AOT compilation needs example inputs)
        self.cpu_compiler = cpu_compiler
        # not a submodule: a compiled wrapper holds the decoder itself (a cycle for named_modules)
        object.__setattr__(self, "compiled", None)
        self.prompt_len = self.step_index = self.max_new = 0

    @classmethod
    def get(
        cls,
        cache: dict,
        language_model: LlamaModel,
        rows: int,
        capacity: int,
        dtype: torch.dtype,
        device: torch.device,
        *,
        compile_step: bool,
        embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
        head: Callable[[torch.Tensor], torch.Tensor] | None = None,
        weights: torch.nn.Module | None = None,
        fuse_key: Hashable = None,
        cpu_compiler: str,
        kv_dtype: torch.dtype | None = None,
    ) -> StaticDecoder:
        """The LLM's decoder for this shape from `cache` (a dict owned by the caller, one per LLM), built on
        first use (compiled at its first step, if asked). Clearing the cache frees the decoders' buffers.

        embed/head: kept from the first call with this `fuse_key` (their identity: a new closure each call
        would otherwise mean a new graph each rollout); weights: the module owning their parameters."""
        key = (rows, capacity, dtype, kv_dtype, str(device), fuse_key)
        if key not in cache:
            cache[key] = cls(
                language_model, rows, capacity, dtype, device, kv_dtype=kv_dtype, embed=embed, head=head,
                weights=weights, cpu_compiler=cpu_compiler,
            )
            logger.info(
                "static decoder for %d rows x %d positions (compiled: %s)", rows, capacity, compile_step
            )
        decoder = cache[key]
        decoder.compile_requested = decoder.compile_requested or compile_step
        return decoder

    def write_prefix(self, prefix: Cache, rows: torch.Tensor) -> None:
        """The last slots of the started prompt region (P - length .. P - 1) of row i <- prefix row rows[i]
        (see `PreallocatedCache.write_prefix`). The prefix may be shorter than the (bucketed) prompt region:
        the prompt then runs without the bucket's extra left padding, whose slots `start` masks."""
        for index, source in enumerate(prefix.layers):
            keys, values = self.layer_cache(index)
            length = source.keys.shape[2]
            if length > self.prompt_len:
                raise ValueError(f"a {length}-token prefix does not fit the {self.prompt_len}-slot prompt region")
            first = self.prompt_len - length
            keys[:, :, first : self.prompt_len].copy_(source.keys.index_select(0, rows))
            values[:, :, first : self.prompt_len].copy_(source.values.index_select(0, rows))

    def layer_cache(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer `index`'s key and value buffers [b, kv_heads, capacity, head_dim]."""
        return getattr(self, f"keys_{index}"), getattr(self, f"values_{index}")

    def start(self, prompt_mask: torch.Tensor, max_new: int) -> None:
        """Begin decoding after a prefill of prompts with mask [b, P]; `max_new` tokens will be fed."""
        rows, prompt_len = prompt_mask.shape
        capacity = self.cache_shape[2]
        if prompt_len + max_new > capacity or rows != self.cache_shape[0]:
            raise ValueError(
                f"{rows} rows x {prompt_len + max_new} positions do not fit {self.cache_shape}"
            )
        keep = torch.ones(rows, capacity, dtype=torch.bool, device=prompt_mask.device)
        keep[:, :prompt_len] = prompt_mask.bool()
        keep[:, prompt_len + max_new :] = False
        self.mask.copy_(additive_mask(keep, self.mask.dtype)[:, None, None, :])
        positions = (
            positions_from_mask(prompt_mask)[:, -1:] + 1 + torch.arange(max(max_new, 1), device=keep.device)
        )
        cos, sin = _rotary_table(self.language_model, positions, self.cos.dtype)  # [b, new, head_dim]
        self.cos[:, : cos.shape[1]].copy_(cos)
        self.sin[:, : sin.shape[1]].copy_(sin)
        self.prompt_len, self.step_index, self.max_new = prompt_len, 0, max_new
        bind = getattr(self.compiled, "bind", None)
        if bind is not None:  # an AOT-compiled step: follow weights replaced since the last rollout
            bind()

    def forward(
        self, inputs: torch.Tensor, step: torch.Tensor, slot: torch.Tensor, *head_args: torch.Tensor | None
    ) -> torch.Tensor:
        """inputs: embeds [b, 1, D] (or whatever `embed` takes), step and slot [1] long (slot = P + step)
        -> hidden [b, D] (or `head(hidden, *head_args)`)."""
        embeds = inputs if self.embed is None else self.embed(inputs)  # [b, 1, D]
        cos, sin = self.cos.index_select(1, step), self.sin.index_select(1, step)  # [b, 1, head_dim]
        mask = torch.where(self.slots <= slot, self.mask, self.minimum)  # [b, 1, 1, capacity]
        hidden = embeds
        for index, layer in enumerate(self.language_model.layers):
            keys, values = self.layer_cache(index)  # [b, kv_heads, capacity, head_dim]

            def write_kv(key, value, keys=keys, values=values):
                keys.index_copy_(2, slot, key)
                values.index_copy_(2, slot, value)
                return keys, values

            hidden = _layer_step(layer, hidden, cos, sin, mask, write_kv, self.attention)
        hidden = self.language_model.norm(hidden)[:, -1]  # [b, D]
        return hidden if self.head is None else self.head(hidden, *head_args)

    def step(self, inputs: torch.Tensor, *head_args: torch.Tensor | None) -> torch.Tensor:
        """Feed the next inputs (token embeddings [b, 1, D], or what `embed` takes) -> hidden [b, D] (or
        `head(hidden, *head_args)`)."""
        if self.step_index >= self.max_new:
            raise ValueError(f"the decoder was started for {self.max_new} tokens")
        step = torch.full((1,), self.step_index, dtype=torch.long, device=inputs.device)
        self.step_index += 1
        if self.compile_requested and self.compiled is None:
            example = (inputs, step, step + self.prompt_len, *head_args)
            compiled = compile_decoder(self, self.weights, example, self.cpu_compiler)
            object.__setattr__(self, "compiled", compiled)
        if self.compiled is None:
            return self(inputs, step, step + self.prompt_len, *head_args)
        if inputs.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # a new replay; the previous output is consumed
        return self.compiled(inputs, step, step + self.prompt_len, *head_args).clone()


# ---------------------------------------------------------------------------------------- together

# Compiled decoding pads prompts to a multiple of a bucket (one graph per bucket). Every step attends
# over the whole padded region, so the bucket is small when few tokens follow: for a Shapes image
# (36 codes after ~20 prompt tokens) 64-slot buckets would be most of the attention's work; long
# generations (576 codes) take 64 and need fewer graphs.
SHORT_PROMPT_BUCKET, LONG_PROMPT_BUCKET = 16, 64
LONG_GENERATION = 256  # new tokens from which LONG_PROMPT_BUCKET applies


def prompt_bucket(max_new: int) -> int:
    """The multiple compiled decoding pads prompts to, for a generation of `max_new` tokens."""
    return LONG_PROMPT_BUCKET if max_new >= LONG_GENERATION else SHORT_PROMPT_BUCKET


def start_decoding(
    language_model: LlamaModel,
    prompt_embeds: torch.Tensor,  # [U, P, D] the distinct prompts
    prompt_mask: torch.Tensor,  # [U, P]
    prompt_of_row: torch.Tensor,  # [b] long: the distinct prompt of each row
    max_new: int,
    *,
    compile_step: bool = False,
    static_decoders: dict | None = None,
    cpu_compiler: str | None = None,
    embed: Callable[[torch.Tensor], torch.Tensor] | None = None,
    head: Callable[..., torch.Tensor] | None = None,
    weights: torch.nn.Module | None = None,
    fuse_key: Hashable = None,
    first_head_args: tuple[torch.Tensor | None, ...] = (),
) -> tuple[torch.Tensor, Callable[..., torch.Tensor]]:
    """Prefill once per distinct prompt, then decode b rows: -> (last prompt state [b, D], step) where
    step(embeds [b, 1, D]) -> next state [b, D] may be called `max_new` times.

    compile_step: the static-shape decoder, compiled (`step_compiler`; on CPU by `cpu_compiler`) and kept in
    `static_decoders` (required then), its prompt region a multiple of `prompt_bucket(max_new)` slots;
    otherwise the preallocated cache and the lean dynamic step.
    embed / head: the step becomes (inputs, *head_args) -> head(state(embed(inputs)), *head_args) and the
    first value head(state, *first_head_args); compiled, they run in the step's graph (for image codes:
    code embedding before; generation head, CFG and the draw of the next code after, so one graph per
    code instead of a graph between two dozen eager ops). head_args are tensors (or None) that change per
    step, e.g. the sampling noise; `weights` is the module owning every parameter embed and head read
    (default: the LLM; CPU compilation binds them to the live tensors). `fuse_key` names the pair (e.g. ("image", cfg_weight, temperature))
    so that later calls reuse the compiled graph.
    """
    dtype, device = prompt_embeds.dtype, prompt_embeds.device
    # Keys and values are stored in the compute dtype: under autocast (fp32 weights, bf16 compute) the
    # attention reads them in bf16 anyway, and a bf16 cache is half the memory of an fp32 one.
    kv_dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else dtype
    rows_mask = prompt_mask.index_select(0, prompt_of_row)  # [b, P]
    first_output = (lambda hidden, *_: hidden) if head is None else head
    if compile_step:
        # The decoder's prompt region is bucketed (one graph per bucket); the prompt itself runs unpadded
        # and fills the region's last P slots (the extra left slots are masked like padding).
        (rows_mask,) = left_pad_to_multiple(rows_mask, prompt_bucket(max_new))  # [b, P_bucket]
        rows, bucket_len = rows_mask.shape
        if static_decoders is None or cpu_compiler is None:
            raise ValueError("compiled decoding needs static_decoders (a cache) and cpu_compiler")
        decoder = StaticDecoder.get(
            static_decoders, language_model, rows, bucket_len + max_new, dtype, device, compile_step=True,
            embed=embed, head=head, weights=weights, fuse_key=fuse_key, cpu_compiler=cpu_compiler,
            kv_dtype=kv_dtype,
        )
        decoder.start(rows_mask, max_new)
        hidden = shared_prefill(language_model, decoder, prompt_embeds, prompt_mask, prompt_of_row)
        return first_output(hidden, *first_head_args), decoder.step
    rows, prompt_len = rows_mask.shape
    cache = PreallocatedCache(language_model.config, rows, prompt_len + max_new, dtype=kv_dtype, device=device)
    hidden = shared_prefill(language_model, cache, prompt_embeds, prompt_mask, prompt_of_row)
    step = DecodeStep(language_model, cache, rows_mask, max_new)
    if embed is None and head is None:
        return hidden, step

    def fused_step(inputs: torch.Tensor, *head_args: torch.Tensor | None) -> torch.Tensor:
        state = step(inputs if embed is None else embed(inputs))
        return state if head is None else head(state, *head_args)

    return first_output(hidden, *first_head_args), fused_step
