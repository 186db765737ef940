"""The network: Panoptic-DeepLab (Detectron2 layout and keys) + a depth branch."""

from .config import SCALE_RANGE, SCALE_RANGE_TEXT, BranchConfig, ModelConfig
from .panoptic_depthlab import OUTPUT_NAMES, PanopticDepthLab, build_model

__all__ = [
    "OUTPUT_NAMES",
    "SCALE_RANGE",
    "SCALE_RANGE_TEXT",
    "BranchConfig",
    "ModelConfig",
    "PanopticDepthLab",
    "build_model",
]
