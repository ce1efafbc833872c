"""Errors the command line reports in one line (no traceback unless -v): kept apart so that `corl.cli`
can name them without importing the library."""


class RunFailed(RuntimeError):
    """A training run cannot learn anything more (no usable rewards, non-finite gradients); its last
    checkpoint is intact."""


class WriteFailed(RunFailed, OSError):
    """A run could not write into its output folder (a disk or quota problem): it stopped, the checkpoints
    written before are intact and it resumes once the disk is fixed. An OSError too, for callers that
    handle file-system errors."""


class DiskFull(WriteFailed):
    """WriteFailed because the device holding the output folder is full."""


class MissingPackage(ImportError):
    """An optional package (a corl extra) that the run's settings ask for is not installed; the message
    names what to install. The user's to fix, unlike an ImportError from inside a library."""
