"""Training the Shapes model's VQ tokenizer (transformers' `JanusVQVAE`) on renders of the Shapes world.

What transformers gives and what we add. `JanusVQVAE.forward` is an inference path: it quantizes by
nearest code with *unnormalized* distances, then `decode(indices)` looks the codes up again and
l2-normalizes them (LlamaGen's `codebook_l2_norm`, which Janus inherits). Its returned `embedding_loss`
is the usual VQ loss, but no gradient reaches the encoder through the index lookup of `decode`. So we
train with our own step over the same modules, on the unit sphere that `decode` implies:

    z_n = normalize(quant_conv(encoder(x)))            # [B, E, 6, 6] for 48 px, patch 8
    z_q = e_n[k]                                       # unit code vectors, k the codes of the patches
    x'  = decoder(post_quant_conv(z_n + sg(z_q - z_n)))  # straight-through estimator
    loss = pixel_loss(x', x) + ||sg(z_n) - z_q||^2 + beta ||z_n - sg(z_q)||^2 (+ code cross-entropy)

After training the codebook rows are stored l2-normalized (`finalize_codebook`). Then transformers' own
`encode` (argmin ||z - e||^2 = argmax <z, e> for unit e) picks the codes training picked, and `decode`
(which normalizes again, a no-op) reconstructs exactly what training reconstructed.

Choices taken (each one measured on this world):
- Two phases. First a plain autoencoder on the unit latents (`ae_fraction` of the steps): colors are
  learned much faster without quantization in the way. Then the codebook is seeded from the latents and
  training continues quantized.
- Patch codes. Renders are cell-aligned, so every 8 px patch is one of a small set of exact pixel
  patterns (61 for the default world: empty, or one quadrant of one of 15 colored shapes). With nearest-
  code quantization the white background (over half of all patches) took most codes with variants that
  depend on the neighbours (40 codes for white in one run), which makes the generation targets noisy.
  So when the distinct patches fit in the codebook (`patch_codes`), code j is *defined* as distinct patch
  j: seeded with that patch's mean latent, used as the quantization target, and a cross-entropy on the
  cosine logits teaches the encoder to land nearest to it (`patch_code_accuracy` in the report checks
  that transformers' `encode` agrees). Otherwise: spherical k-means init and nearest-code quantization.
- Pixel loss: L1 + MSE with object pixels weighted `object_weight` (the background is easy and large).
- Convs re-initialized with PyTorch defaults (`reinit`): transformers' N(0, 0.02) init is meant for
  loaded weights; trained from scratch with it, the 32-channel VQ (GroupNorm(32) = per-channel
  normalization) took far longer to learn colors.
- Training images: half scenes drawn by `sample_scene`, half dense random layouts of 3 to 9 objects
  (`render_objects`), pre-rendered into a pool; batches are drawn from it with a seeded generator.
- Pixels live in the image processor's normalized space ([-1, 1], mean = std = 0.5), the space `decode`
  returns and `decode_images` post-processes. Adam, linear warmup then cosine decay to 10%.
"""


from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm
from transformers.models.janus.modeling_janus import JanusVQVAE

from corl.shapes.render import render_objects, render_scene
from corl.shapes.scene import ALL_CELLS, COLOR_NAMES, SHAPES, Scene, ShapeObject, sample_scene
from corl.shapes.scorer import score_generation, summarize_results

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VQTrainingConfig:
    """Knobs of VQ training (defaults: the shipped Shapes base model)."""

    steps: int = 800
    batch_size: int = 8
    lr: float = 2e-3
    warmup_steps: int = 20
    beta: float = 0.25  # weight of the commitment term (encoder pulled towards its code)
    pool_size: int = 3000  # pre-rendered training images
    dense_fraction: float = 0.5  # share of dense random layouts in the pool
    ae_fraction: float = 0.6  # share of the steps trained as a plain autoencoder, before the codebook is seeded
    patch_codes: bool = True  # one code per distinct pixel patch, when there are no more patches than codes
    code_temperature: float = 0.1  # of the cosine logits in the code cross-entropy (patch codes only)
    init_images: int = 512  # pool images whose latents seed the codebook
    kmeans_iterations: int = 20  # spherical k-means (only without patch codes)
    object_weight: float = 5.0  # pixel-loss weight on object pixels (background weight 1)
    reinit: bool = True  # start convs from PyTorch's default init instead of N(0, initializer_range)
    seed: int = 0


# ---- data ----------------------------------------------------------------------------------------


def images_to_pixels(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL RGB images -> [B, 3, H, W] float32 in [-1, 1] (the processor's mean = std = 0.5 space)."""
    arrays = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])  # [B, H, W, 3]
    pixels = torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0
    return pixels.contiguous()


def pixels_to_images(pixels: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> PIL RGB images (clamped, rounded)."""
    arrays = ((pixels.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in arrays]


def dense_layout(rng: random.Random, min_objects: int = 3, max_objects: int = 9) -> list[ShapeObject]:
    """Random objects (any shape and color) in distinct random cells; no caption rules apply."""
    n = rng.randint(min_objects, max_objects)
    return [ShapeObject(rng.choice(SHAPES), rng.choice(COLOR_NAMES), r, c) for r, c in rng.sample(ALL_CELLS, n)]


def training_pool(size: int, seed: int, image_size: int = 48, dense_fraction: float = 0.5) -> torch.Tensor:
    """[size, 3, H, W] renders in [-1, 1]: scenes of the world mixed with dense random layouts."""
    rng = random.Random(f"corl-vq-pool:{seed}")
    images = []
    for _ in range(size):
        if rng.random() < dense_fraction:
            images.append(render_objects(dense_layout(rng), image_size))
        else:
            images.append(render_scene(sample_scene(rng), image_size))
    return images_to_pixels(images)


# ---- quantization (the unit-sphere version decode() implies) ---------------------------------------


def unit_codebook(vq: JanusVQVAE) -> torch.Tensor:
    """[K, E] l2-normalized code vectors."""
    return F.normalize(vq.quantize.embedding.weight, dim=-1)


def quantize(vq: JanusVQVAE, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z [B, E, h, w] -> (unit z [B, E, h, w], its unit code vectors [B, E, h, w], indices [B, h * w])."""
    z_n = F.normalize(z, dim=1)
    codebook = unit_codebook(vq)  # [K, E]
    batch, dim, h, w = z_n.shape
    flat = z_n.permute(0, 2, 3, 1).reshape(-1, dim)  # [B*h*w, E]
    indices = (flat @ codebook.T).argmax(dim=-1)  # [B*h*w]: max cosine = min distance on the sphere
    z_q = codebook[indices].view(batch, h, w, dim).permute(0, 3, 1, 2)  # [B, E, h, w]
    return z_n, z_q, indices.view(batch, h * w)


@torch.no_grad()
def encode_codes(vq: JanusVQVAE, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Pixels [B, 3, H, W] in [-1, 1] -> VQ codes [B, N] (raster order, as decode() expects)."""
    out = []
    for start in range(0, pixels.shape[0], batch_size):
        z = vq.quant_conv(vq.encoder(pixels[start : start + batch_size]))
        out.append(quantize(vq, z)[2])
    return torch.cat(out)


@torch.no_grad()
def decode_codes(vq: JanusVQVAE, codes: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """VQ codes [B, N] -> pixels [B, 3, H, W] through transformers' own `decode`."""
    return torch.cat([vq.decode(codes[s : s + batch_size]) for s in range(0, codes.shape[0], batch_size)])


@torch.no_grad()
def finalize_codebook(vq: JanusVQVAE) -> None:
    """Store the codebook l2-normalized, so transformers' `encode` picks the codes training picked."""
    vq.quantize.embedding.weight.copy_(unit_codebook(vq))


# ---- training ------------------------------------------------------------------------------------


def warmup_cosine_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warmup over `warmup` steps, then cosine decay to 10% at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def spherical_kmeans(points: torch.Tensor, k: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Unit vectors [n, E] -> k unit centroids [k, E] (cosine k-means, seeded random init; a centroid
    left without points is re-seeded from a random point)."""
    centroids = points[torch.randperm(points.shape[0], generator=generator)[:k]].clone()
    for _ in range(iterations):
        assign = (points @ centroids.T).argmax(dim=1)  # [n]
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        if empty.any():
            sums[empty] = points[torch.randint(0, points.shape[0], (int(empty.sum()),), generator=generator)]
        centroids = F.normalize(sums, dim=-1)
    return centroids


def patch_keys(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> [B * h * w, 3 * patch * patch] uint8 pixel content of each token's patch,
    in the (b, row, col) order of the latent grid."""
    grid = pixels.unfold(2, patch, patch).unfold(3, patch, patch)  # [B, 3, h, w, p, p]
    flat = grid.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * patch * patch)
    return ((flat + 1.0) * 127.5).round().to(torch.uint8)


@torch.no_grad()
def unit_latents(vq: JanusVQVAE, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """[B, 3, H, W] -> [B * h * w, E] unit encoder latents in (b, row, col) order."""
    out = []
    for start in range(0, pixels.shape[0], batch_size):
        z = vq.quant_conv(vq.encoder(pixels[start : start + batch_size]))  # [b, E, h, w]
        out.append(F.normalize(z, dim=1).permute(0, 2, 3, 1).reshape(-1, z.shape[1]))
    return torch.cat(out)


@torch.no_grad()
def init_codebook(vq: JanusVQVAE, latents: torch.Tensor, patch_ids: torch.Tensor | None, iterations: int,
                  generator: torch.Generator) -> None:
    """Seed the codebook from unit latents [n, E].

    patch_ids [n] (distinct-patch index of each latent, fewer distinct patches than codes): code j is the
    mean latent of patch j, spare codes random unit vectors. None: spherical k-means on the latents.
    """
    num_codes = vq.quantize.num_embeddings
    if patch_ids is None:
        codebook = spherical_kmeans(latents, num_codes, iterations, generator)
    else:
        num_patches = int(patch_ids.max()) + 1
        sums = torch.zeros(num_patches, latents.shape[1]).index_add_(0, patch_ids, latents)
        spare = torch.randn(num_codes - num_patches, latents.shape[1], generator=generator)
        codebook = F.normalize(torch.cat([sums, spare]), dim=-1)
    vq.quantize.embedding.weight.copy_(codebook)


def reinit_conv_weights(vq: JanusVQVAE, generator_seed: int) -> None:
    """Re-initialize every conv and the codebook with PyTorch's defaults (Kaiming-uniform).

    transformers initializes all convs with N(0, initializer_range = 0.02), meant for weights that are
    loaded afterwards; trained from scratch, such a conv stack learns colors only after many steps.
    """
    state = torch.random.get_rng_state()
    torch.manual_seed(generator_seed)
    try:
        for module in vq.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Embedding)):
                module.reset_parameters()
    finally:
        torch.random.set_rng_state(state)


def pixel_loss(recon: torch.Tensor, target: torch.Tensor, object_weight: float) -> torch.Tensor:
    """Weighted L1 + MSE; pixels that are not background (any channel below 0.9 in [-1, 1], i.e. some
    ink) weigh `object_weight`, so the few colored pixels are not drowned by the white background."""
    ink = (target.amin(dim=1, keepdim=True) < 0.9).float()  # [b, 1, H, W]
    weight = 1.0 + (object_weight - 1.0) * ink
    error = (recon - target).abs()
    return ((error + error.square()) * weight).sum() / (weight.sum() * target.shape[1])


def train_vq(vq: JanusVQVAE, config: VQTrainingConfig = VQTrainingConfig(), image_size: int = 48) -> dict:
    """Train `vq` in place on Shapes renders (module docstring); returns losses and code statistics.
    Leaves vq in eval mode with a normalized codebook (`finalize_codebook`)."""
    generator = torch.Generator().manual_seed(config.seed)
    pool = training_pool(config.pool_size, config.seed, image_size, config.dense_fraction)  # [P, 3, H, W]
    patch = image_size // vq.quantize.quant_state_dims[0]
    _, pool_patch_ids = torch.unique(patch_keys(pool, patch), dim=0, return_inverse=True)  # [P * h * w]
    num_patches = int(pool_patch_ids.max()) + 1
    num_codes = vq.quantize.num_embeddings
    patch_codes = config.patch_codes and num_patches <= num_codes
    if config.patch_codes and not patch_codes:
        logger.warning("%d distinct patches > %d codes: nearest-code quantization with k-means init",
                       num_patches, num_codes)
    pool_patch_ids = pool_patch_ids.view(pool.shape[0], -1)  # [P, h * w]
    if config.reinit:
        reinit_conv_weights(vq, config.seed)
    vq.train()
    optimizer = torch.optim.Adam(vq.parameters(), lr=config.lr, betas=(0.9, 0.99))
    ae_steps = round(config.ae_fraction * config.steps)
    history: list[float] = []
    start = time.perf_counter()
    for step in tqdm(range(config.steps), desc="VQ training", unit="step", mininterval=5):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * warmup_cosine_factor(step, config.warmup_steps, config.steps)
        if step == ae_steps:  # phase 2 starts: seed the codebook from the autoencoder's latents
            vq.eval()
            n = min(config.init_images, pool.shape[0])
            init_codebook(vq, unit_latents(vq, pool[:n]), pool_patch_ids[:n].flatten() if patch_codes else None,
                          config.kmeans_iterations, generator)
            vq.train()
        rows = torch.randint(0, pool.shape[0], (config.batch_size,), generator=generator)
        batch = pool[rows]  # [b, 3, H, W]
        z = vq.quant_conv(vq.encoder(batch))  # [b, E, h, w]
        if step < ae_steps:  # phase 1: plain autoencoder on the unit sphere
            recon = vq.decoder(vq.post_quant_conv(F.normalize(z, dim=1)))
            loss = recon_loss = pixel_loss(recon, batch, config.object_weight)
        else:  # phase 2: quantized
            z_n = F.normalize(z, dim=1)
            b, dim, h, w = z_n.shape
            codebook = unit_codebook(vq)  # [K, E]
            flat = z_n.permute(0, 2, 3, 1).reshape(-1, dim)  # [b*h*w, E]
            similarity = flat @ codebook.T  # [b*h*w, K]
            indices = pool_patch_ids[rows].flatten() if patch_codes else similarity.argmax(dim=-1).detach()
            z_q = codebook[indices].view(b, h, w, dim).permute(0, 3, 1, 2)  # [b, E, h, w]
            codebook_loss = F.mse_loss(z_q, z_n.detach())
            commitment_loss = F.mse_loss(z_n, z_q.detach())
            z_st = z_n + (z_q - z_n).detach()  # straight-through: decoder gradient flows to the encoder
            recon = vq.decoder(vq.post_quant_conv(z_st))  # [b, 3, H, W]
            recon_loss = pixel_loss(recon, batch, config.object_weight)
            loss = recon_loss + codebook_loss + config.beta * commitment_loss
            if patch_codes:  # the nearest code must be the patch's own code: cosine logits, cross-entropy
                loss = loss + F.cross_entropy(similarity / config.code_temperature, indices)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(recon_loss.item())
    finalize_codebook(vq)
    vq.eval()
    check = pool[: min(512, pool.shape[0])]
    codes = encode_codes(vq, check)  # [n, h*w]
    report = {
        "steps": config.steps,
        "batch_size": config.batch_size,
        "final_recon_loss": round(float(np.mean(history[-20:])), 5) if history else None,
        "codebook_size": int(num_codes),
        "distinct_patches": num_patches,
        "patch_codes": patch_codes,
        "codes_used_on_512_renders": int(codes.unique().numel()),
        "seconds": round(time.perf_counter() - start, 1),
    }
    if patch_codes:  # share of patches whose encode() code is their patch's code
        report["patch_code_accuracy"] = round(float((codes == pool_patch_ids[: check.shape[0]]).float().mean()), 5)
    return report


@torch.no_grad()
def reconstruction_quality(vq: JanusVQVAE, scenes: Sequence[Scene], image_size: int = 48) -> dict:
    """Round-trip renders of `scenes` through encode -> decode and score them like generations.

    Returns the scorer pass rate (overall = mean over categories, and per category), the share of
    reconstructions passing, and the mean absolute pixel error (0..255 scale). This caps what
    generation can reach.
    """
    renders = [render_scene(s, image_size) for s in scenes]
    pixels = images_to_pixels(renders)
    recon = pixels_to_images(decode_codes(vq, encode_codes(vq, pixels)))
    results = [score_generation(im, s) for im, s in zip(recon, scenes)]
    summary = summarize_results(results)
    error = float(np.mean([np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean()
                           for a, b in zip(renders, recon)]))
    return {
        "pass_rate": float(np.mean([r.passed for r in results])),
        "by_category": summary,
        "mean_abs_pixel_error": round(error, 3),
        "n": len(scenes),
    }
