"""Lets a CUDA build of torchvision import beside a CPU-only torch (the `janus` extra on a machine without
GPUs).

PyPI's Linux wheels of torchvision are CUDA builds. Beside a CPU-only torch their compiled ops cannot load
(they link the CUDA libraries of torch), and `import torchvision` then fails while registering fake
kernels for two of those ops ("operator torchvision::nms does not exist"). transformers imports torchvision
whenever it is installed (the Janus modeling code included), so the failure would stop corl altogether.
Declaring the two op schemas first lets torchvision import; its pure-Python parts (the VGG / AlexNet
backbones LPIPS needs, transforms) work, its compiled ops (nms, roi_align, image decoding) stay
unavailable. Nothing happens when torchvision is absent, when torch has CUDA, or when torchvision is not a
CUDA build.

`import corl` only arms the fix (`declare_before_torchvision_imports`): the schemas need torch, and
importing torch (about a second) at `import corl` would make `corl --help` slow for nothing.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # the torch.library.Library holding the schemas (kept alive for the process)


def cuda_build_of_torchvision() -> bool:
    """Whether the installed torchvision is a CUDA build (read from its version file, without importing it)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        text = version_file.read_text()
    except OSError:
        return False
    return re.search(r"__version__\s*=\s*['\"][^'\"]*\+cu\d+", text) is not None


def declare_missing_torchvision_ops() -> bool:
    """Declare torchvision's op schemas when a CUDA torchvision sits beside a CPU-only torch (module
    docstring); returns whether it did. Idempotent; call it before anything imports torchvision."""
    global _library
    if _library is not None:
        return True
    if not cuda_build_of_torchvision():
        return False
    import torch

    if torch.version.cuda is not None:
        return False
    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _library = library
    return True


class _DeclareFirst:
    """A meta path finder that finds nothing itself: asked for torchvision (by an import, or by a library
    checking whether it is installed), it declares the schemas, leaves sys.meta_path and lets the real
    finders answer. A plain class with `find_spec` (importing importlib.abc for the ABC costs ~20 ms)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision" or _torch_importing():
            return None
        _remove_hook()
        declare_missing_torchvision_ops()
        return None


def _torch_importing() -> bool:
    """Whether torch is half-imported (one of its own modules asked): declaring now would see a torch
    without torch.library, so the hook waits for the next question."""
    torch = sys.modules.get("torch")
    spec = getattr(torch, "__spec__", None)
    return torch is not None and bool(getattr(spec, "_initializing", False))


def _remove_hook() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _DeclareFirst)]


def declare_before_torchvision_imports() -> None:
    """Arrange for `declare_missing_torchvision_ops` to run just before torchvision is first looked up,
    without importing torch now. Costs one file read when the fix may be needed, nothing otherwise."""
    if "torchvision" in sys.modules:  # imported already: the schemas exist, or declaring them can no longer help
        return
    if not cuda_build_of_torchvision():
        return
    if not any(isinstance(finder, _DeclareFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, _DeclareFirst())
