"""The network: Panoptic-DeepLab (Detectron2 layout and keys) + a depth branch."""

from .config import BranchConfig, ModelConfig
from .panoptic_depthlab import OUTPUT_NAMES, PanopticDepthLab, build_model

__all__ = ["OUTPUT_NAMES", "BranchConfig", "ModelConfig", "PanopticDepthLab", "build_model"]
