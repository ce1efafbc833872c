"""The default Shapes split (what `corl shapes build`, `corl eval` and the base model use), in a module
that imports nothing, so command-line parsers can name it without loading `datasets`."""

DEFAULT_N_TRAIN = 2000
DEFAULT_N_TEST = 300
DEFAULT_SEED = 0
DEFAULT_IMAGE_SIZE = 48
