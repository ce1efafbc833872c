import numpy as np
import pytest

from corl.shapes.noise_images import NOISE_KINDS, noise_image


@pytest.mark.parametrize("kind", list(NOISE_KINDS))
def test_each_kind_is_seeded_rgb_of_the_requested_size(kind):
    a = noise_image(kind, np.random.default_rng(3), 40)
    b = noise_image(kind, np.random.default_rng(3), 40)
    assert a.mode == "RGB" and a.size == (40, 40)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    others = [np.asarray(noise_image(kind, np.random.default_rng(s), 40)) for s in range(4, 8)]
    assert any(not np.array_equal(np.asarray(a), o) for o in others)


def test_kinds_look_like_what_they_claim():
    rng = np.random.default_rng(0)
    plain = np.asarray(noise_image("plain", rng))
    assert (plain == plain[0, 0]).all() and plain[0, 0].min() < 255 - 39
    uniform = np.asarray(noise_image("uniform", rng), dtype=np.float64)
    assert 100 < uniform.mean() < 155 and uniform.std() > 60
    scribble = np.asarray(noise_image("scribbles", rng))
    assert 0.3 < (scribble == 255).all(axis=-1).mean() < 1.0  # lines on a white background
    blocky = np.asarray(noise_image("blocky", rng), dtype=np.float64)  # 6 x 6 patches of 8 px
    inside = np.abs(blocky[:, 3:45:8] - blocky[:, 4:45:8]).mean()  # neighbours in the middle of a patch
    across = np.abs(blocky[:, 4:40:8] - blocky[:, 12:48:8]).mean()  # middles of neighbouring patches
    assert inside < 0.2 * across


def test_unknown_kind_and_bad_size_raise():
    with pytest.raises(ValueError, match="unknown noise kind"):
        noise_image("fog", np.random.default_rng(0))
    with pytest.raises(ValueError):
        noise_image("uniform", np.random.default_rng(0), 8)
