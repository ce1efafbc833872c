"""corl: co-reinforcement learning for unified multimodal models."""

from corl.torchvision_compat import declare_missing_torchvision_ops

__version__ = "0.1.0"

declare_missing_torchvision_ops()  # before transformers imports torchvision (a no-op unless it must)
