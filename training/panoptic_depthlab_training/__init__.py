"""Training, evaluation, Cityscapes tooling and synthetic scenes for Panoptic-DepthLab.

Imports the model from the ROS-free core ``panoptic_depthlab_ros``; never imports ROS.
"""

__version__ = "0.1.0"
