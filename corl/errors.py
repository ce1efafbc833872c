"""Errors the command line reports in one line (no traceback unless -v): kept apart so that `corl.cli`
can name them without importing the library."""


class RunFailed(RuntimeError):
    """A training run cannot learn anything more (no usable rewards, non-finite gradients); its last
    checkpoint is intact."""
