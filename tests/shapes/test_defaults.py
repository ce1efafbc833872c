"""One default Shapes split for every entry point (build command, training, eval, demo)."""

from corl.config import DataConfig
from corl.shapes import commands, dataset


def test_default_sizes_agree_everywhere():
    assert (commands.DEFAULT_N_TRAIN, commands.DEFAULT_N_TEST) == (dataset.DEFAULT_N_TRAIN, dataset.DEFAULT_N_TEST)
    cfg = DataConfig()
    assert (cfg.shapes_n_train, cfg.shapes_n_test) == (dataset.DEFAULT_N_TRAIN, dataset.DEFAULT_N_TEST)
    assert cfg.shapes_image_size == dataset.DEFAULT_IMAGE_SIZE
