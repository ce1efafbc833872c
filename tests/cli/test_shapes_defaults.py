"""One default Shapes split for every entry point (build command, training, eval, demo)."""

import argparse

from corl.cli import shapes as shapes_command
from corl.config import DataConfig
from corl.shapes import dataset_defaults as defaults


def test_default_sizes_agree_everywhere():
    cfg = DataConfig()
    assert (cfg.shapes_n_train, cfg.shapes_n_test) == (defaults.DEFAULT_N_TRAIN, defaults.DEFAULT_N_TEST)
    assert (cfg.shapes_image_size, cfg.shapes_seed) == (defaults.DEFAULT_IMAGE_SIZE, defaults.DEFAULT_SEED)
    parser = argparse.ArgumentParser()
    shapes_command.register(parser.add_subparsers())
    args = parser.parse_args(["shapes", "build", "--out", "x"])
    assert (args.n_train, args.n_test, args.seed, args.image_size) == (
        defaults.DEFAULT_N_TRAIN, defaults.DEFAULT_N_TEST, defaults.DEFAULT_SEED, defaults.DEFAULT_IMAGE_SIZE)
