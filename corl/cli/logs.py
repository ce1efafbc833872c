"""How the command line logs.

- Every line goes through `tqdm.write`, which lifts the progress bars on the terminal, prints the line and
  redraws them below it: a log line never breaks a bar.
- Under a launcher (`accelerate launch`, torchrun) rank 0 logs INFO and the other ranks WARNING and above,
  with their rank in the line; `-v` makes every rank log everything. The rank is read from RANK /
  LOCAL_RANK, which the launcher sets before accelerate starts.
- The libraries' own progress bars that tell a user nothing (transformers' "Loading weights" at every
  model load, datasets' "Generating train split" / map / save bars) are off unless `-v`. Hub download
  bars stay (downloads are long) but only rank 0 draws them: every rank downloads the same files, so the
  others would draw the same bars again. The libraries' loggers go through the same handler instead of
  their own stderr handlers (which would also print each warning twice, once per handler).
- None of those libraries is imported here: each is configured right after a command imports it
  (`after_import`), so `corl --help` and the light commands never pay for them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from types import ModuleType

from corl.launch import launch_rank

FORMAT = "%(asctime)s{rank} %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"


class TqdmHandler(logging.StreamHandler):
    """A stream handler that writes through `tqdm.write` (bars drawn on the same stream move below)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm  # here: imported on the first line logged, not at `corl --help`

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001 - logging's own contract: a failing handler reports, never raises
            self.handleError(record)


def setup_logging(verbose: bool) -> None:
    """The command line's logging (module docstring). Like `logging.basicConfig`, it does nothing when the
    root logger already has handlers: a program (or pytest) that calls `main` logs its own way, and the
    libraries it imported stay as it set them."""
    root = logging.getLogger()
    if root.handlers:
        return
    rank, world = launch_rank()
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter(FORMAT.format(rank=f" [rank {rank}]" if world > 1 else ""),
                                           datefmt=DATE_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO if rank == 0 else logging.WARNING)
    quiet_libraries(verbose=verbose, draws_downloads=verbose or rank == 0)


# ----------------------------------------------------------------------------------------- libraries


def quiet_libraries(*, verbose: bool, draws_downloads: bool) -> None:
    """Configure transformers, datasets and huggingface_hub when (if) a command imports them."""
    def hub_bars(module: ModuleType) -> None:
        _bars(module, draws_downloads, "HF_HUB_DISABLE_PROGRESS_BARS")

    after_import("transformers.utils.logging", lambda module: _transformers(module, verbose, hub_bars))
    after_import("datasets.utils.logging", lambda module: _to_root(logging.getLogger("datasets")))
    after_import("datasets.utils.tqdm", lambda module: _bars(module, verbose, "HF_DATASETS_DISABLE_PROGRESS_BARS"))
    after_import("huggingface_hub.utils.logging", lambda module: _to_root(logging.getLogger("huggingface_hub")))
    after_import("huggingface_hub.utils.tqdm", hub_bars)


def _transformers(module: ModuleType, verbose: bool, hub_bars: Callable[[ModuleType], None]) -> None:
    module.disable_default_handler()
    module.enable_propagation()
    # transformers has no environment variable for its bars; its functions are the only switch. They switch
    # the hub's bars too, so the hub's setting is made again after (transformers imported the hub first).
    (module.enable_progress_bar if verbose else module.disable_progress_bar)()
    hub = sys.modules.get("huggingface_hub.utils.tqdm")
    if hub is not None:
        hub_bars(hub)


def _bars(module: ModuleType, show: bool, variable: str) -> None:
    if variable in os.environ:  # the user's setting wins (the library would warn and ignore the call)
        return
    (module.enable_progress_bars if show else module.disable_progress_bars)()


def _to_root(library_logger: logging.Logger) -> None:
    """Drop the library's own stderr handler; its records reach the root handler by propagation."""
    for handler in list(library_logger.handlers):
        if type(handler) is logging.StreamHandler:
            library_logger.removeHandler(handler)
    library_logger.propagate = True


class _AfterImport:
    """A meta path finder (sys.meta_path) that finds nothing itself: it asks the finders after it for
    `name` and has `configure(module)` run right after the module's code ran. (A plain class with
    `find_spec`: importing importlib.abc for the ABC would cost `corl --help` ~20 ms.)"""

    def __init__(self, name: str, configure: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.configure = configure

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or isinstance(finder, _AfterImport) or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_code = loader.exec_module
        configure = self.configure

        def exec_module(module: ModuleType) -> None:
            run_code(module)
            configure(module)

        loader.exec_module = exec_module  # this spec's own loader instance: no other module is touched
        return spec


def after_import(name: str, configure: Callable[[ModuleType], None]) -> None:
    """Run `configure(module)` once module `name` is imported: now if it already is, else right after its
    import (a later call for the same name replaces the earlier one)."""
    sys.meta_path[:] = [f for f in sys.meta_path if not (isinstance(f, _AfterImport) and f.name == name)]
    module = sys.modules.get(name)
    if module is not None:
        configure(module)
    else:
        sys.meta_path.insert(0, _AfterImport(name, configure))
