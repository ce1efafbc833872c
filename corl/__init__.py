"""corl: co-reinforcement learning for unified multimodal models."""

from corl.torchvision_compat import declare_before_torchvision_imports

__version__ = "0.1.0"

# Before transformers imports torchvision (a no-op unless it must); armed now, run at that import, so
# that `import corl` does not import torch.
declare_before_torchvision_imports()
