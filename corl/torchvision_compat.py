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
"""

from __future__ import annotations

import importlib.util
import re
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
