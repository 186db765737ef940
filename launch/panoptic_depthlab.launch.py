"""Launch the Panoptic-DepthLab node (and optionally rviz2).

    ros2 launch panoptic_depthlab_ros panoptic_depthlab.launch.py image:=/camera/image_raw

Arguments: params_file, image, camera_info, namespace, use_sim_time, rviz, managed.

managed:=true starts a lifecycle node (launch_ros ``LifecycleNode``) that waits
unconfigured until a lifecycle manager, or a person, drives it:

    ros2 lifecycle set /panoptic_depthlab configure   # load the model, create publishers
    ros2 lifecycle set /panoptic_depthlab activate    # start processing
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from launch import LaunchDescription

PACKAGE = "panoptic_depthlab_ros"
NODE_NAME = "panoptic_depthlab"


def generate_launch_description() -> LaunchDescription:
    """Node with remapped input topics, parameters from a YAML file, optional rviz."""
    share = get_package_share_directory(PACKAGE)
    params_file = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    use_sim_time = LaunchConfiguration("use_sim_time")
    managed = LaunchConfiguration("managed")

    arguments = [
        DeclareLaunchArgument(
            "params_file", default_value=os.path.join(share, "config", "panoptic_depthlab.yaml"),
            description="YAML file with the node's parameters"),
        DeclareLaunchArgument(
            "image", default_value="/camera/image_raw",
            description="sensor_msgs/Image topic to segment (its /compressed sibling with "
                        "image_transport:=compressed)"),
        DeclareLaunchArgument(
            "camera_info", default_value="/camera/camera_info",
            description="sensor_msgs/CameraInfo topic for 3D centroids, markers and points"),
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (e.g. with ros2 bag play --clock)"),
        DeclareLaunchArgument("rviz", default_value="false", description="Also start rviz2"),
        DeclareLaunchArgument("managed", default_value="false",
                              description="Run as a lifecycle (managed) node: starts unconfigured, "
                                          "configure/activate through ~/change_state"),
    ]

    remappings = [
        ("image", LaunchConfiguration("image")),
        ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
        ("camera_info", LaunchConfiguration("camera_info")),
    ]
    common = dict(
        package=PACKAGE,
        executable="panoptic_depthlab_node",
        output="screen",
        remappings=remappings,
    )
    # The same executable either way; `managed` tells it which kind of node to be.
    node = Node(
        **common,
        name=NODE_NAME,
        namespace=namespace,
        parameters=[params_file, {"use_sim_time": use_sim_time, "managed": False}],
        condition=UnlessCondition(managed))
    # Jazzy's launch_ros LifecycleNode requires name and namespace (keyword-only, no
    # defaults) and has no autostart: the node stays unconfigured until told otherwise.
    lifecycle_node = LifecycleNode(
        **common,
        name=NODE_NAME,
        namespace=namespace,
        parameters=[params_file, {"use_sim_time": use_sim_time, "managed": True}],
        condition=IfCondition(managed))

    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        namespace=namespace,
        arguments=["-d", os.path.join(share, "rviz", "panoptic_depthlab.rviz")],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*arguments, node, lifecycle_node, rviz])
