from __future__ import annotations

import random

import pytest
import torch
from transformers import JanusVQVAEConfig
from transformers.models.janus.modeling_janus import JanusVQVAE

from corl.basemodel.vq_training import (
    VQTrainingConfig,
    dense_layout,
    encode_codes,
    finalize_codebook,
    images_to_pixels,
    init_codebook,
    patch_keys,
    pixel_loss,
    pixels_to_images,
    quantize,
    spherical_kmeans,
    train_vq,
    training_pool,
    unit_latents,
)
from corl.shapes.render import render_scene
from corl.shapes.scene import ALL_CELLS, sample_scene


def tiny_vq(seed: int = 0, codes: int = 16) -> JanusVQVAE:
    """A 32-channel, 4-level VQ model (48 px -> 6 x 6 codes), as in the Shapes base model."""
    config = JanusVQVAEConfig(embed_dim=8, num_embeddings=codes, latent_channels=32, base_channels=32,
                              channel_multiplier=[1, 1, 1, 1], num_res_blocks=0, num_patches=6,
                              projection_dim=32, image_token_embed_dim=32)
    torch.manual_seed(seed)
    return JanusVQVAE(config).eval()


def renders(n: int, seed: int = 0) -> torch.Tensor:
    rng = random.Random(seed)
    return images_to_pixels([render_scene(sample_scene(rng)) for _ in range(n)])


def test_pixels_round_trip_through_images():
    pixels = renders(3)
    assert pixels.shape == (3, 3, 48, 48) and pixels.min() >= -1 and pixels.max() <= 1
    assert torch.equal(images_to_pixels(pixels_to_images(pixels)), pixels)


def test_finalized_codebook_makes_transformers_encode_and_decode_match_training():
    vq = tiny_vq()
    with torch.no_grad():
        vq.quantize.embedding.weight.mul_(3.0)  # un-normalized codes: transformers' encode would disagree
    finalize_codebook(vq)
    assert torch.allclose(vq.quantize.embedding.weight.norm(dim=-1), torch.ones(16))
    pixels = renders(4)
    ours = encode_codes(vq, pixels)  # [4, 36]
    theirs = vq.encode(pixels).image_tokens.view(4, -1)
    assert ours.shape == (4, 36) and torch.equal(ours, theirs)
    with torch.no_grad():
        _, z_q, _ = quantize(vq, vq.quant_conv(vq.encoder(pixels)))
        training_path = vq.decoder(vq.post_quant_conv(z_q))  # what the training loss sees
        torch.testing.assert_close(vq.decode(ours), training_path)


def test_spherical_kmeans_recovers_separated_directions():
    generator = torch.Generator().manual_seed(0)
    centers = torch.eye(4)[:3]  # three orthogonal unit directions in 4-D
    points = torch.nn.functional.normalize(
        centers.repeat_interleave(50, dim=0) + 0.05 * torch.randn(150, 4, generator=generator), dim=-1)
    found = spherical_kmeans(points, 3, iterations=10, generator=generator)
    similarity = found @ centers.T  # [3, 3]
    assert torch.allclose(found.norm(dim=-1), torch.ones(3))
    assert (similarity.max(dim=0).values > 0.98).all()  # every true direction has a centroid


def test_pixel_loss_weighs_object_pixels():
    target = torch.ones(1, 3, 4, 4)  # white
    target[:, :, 0, 0] = -1.0  # one inked pixel
    miss_object = target.clone()
    miss_object[:, :, 0, 0] = 0.0
    miss_background = target.clone()
    miss_background[:, :, 3, 3] = 0.0
    assert pixel_loss(miss_object, target, 5.0) > 4 * pixel_loss(miss_background, target, 5.0)
    assert torch.isclose(pixel_loss(miss_object, target, 1.0), pixel_loss(miss_background, target, 1.0))


def test_training_pool_is_seeded_and_dense_layouts_use_distinct_cells():
    assert torch.equal(training_pool(6, seed=1), training_pool(6, seed=1))
    assert not torch.equal(training_pool(6, seed=1), training_pool(6, seed=2))
    layout = dense_layout(random.Random(0), 9, 9)
    assert sorted((o.row, o.col) for o in layout) == sorted(ALL_CELLS)


@pytest.mark.parametrize("codes, patch_codes", [(64, True), (8, False)])
def test_train_vq_updates_weights_and_leaves_a_normalized_codebook(codes, patch_codes):
    vq = tiny_vq(codes=codes)
    before = {name: p.detach().clone() for name, p in vq.named_parameters()}
    report = train_vq(vq, VQTrainingConfig(steps=4, batch_size=2, pool_size=6, warmup_steps=1, ae_fraction=0.5,
                                           init_images=6, kmeans_iterations=2))
    assert not vq.training
    assert report["steps"] == 4 and report["final_recon_loss"] > 0
    assert report["patch_codes"] is patch_codes and (report["distinct_patches"] > codes) is not patch_codes
    assert ("patch_code_accuracy" in report) is patch_codes
    changed = [n for n, p in vq.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("encoder.") for n in changed) and any(n.startswith("decoder.") for n in changed)
    assert torch.allclose(vq.quantize.embedding.weight.norm(dim=-1), torch.ones(codes), atol=1e-5)


def test_patch_keys_see_the_few_distinct_patches_of_renders():
    pixels = training_pool(40, seed=0)
    keys = patch_keys(pixels, 8)
    assert keys.shape == (40 * 36, 3 * 64)
    assert len(torch.unique(keys, dim=0)) <= 61  # empty, or a quadrant of one of 15 colored shapes


def test_init_codebook_puts_each_distinct_patch_on_its_own_code():
    vq = tiny_vq(codes=64)
    pixels = training_pool(20, seed=0)
    _, patch_ids = torch.unique(patch_keys(pixels, 8), dim=0, return_inverse=True)
    latents = unit_latents(vq, pixels)
    init_codebook(vq, latents, patch_ids, iterations=1, generator=torch.Generator().manual_seed(0))
    codebook = torch.nn.functional.normalize(vq.quantize.embedding.weight, dim=-1)
    first = patch_ids[0].item()
    expected = torch.nn.functional.normalize(latents[patch_ids == first].mean(dim=0), dim=0)
    torch.testing.assert_close(codebook[first], expected)
