"""Launch the Panoptic-DepthLab node (and optionally rviz2).

    ros2 launch panoptic_depthlab_ros panoptic_depthlab.launch.py image:=/camera/image_raw
    ros2 launch panoptic_depthlab_ros panoptic_depthlab.launch.py cameras:=[front,left,right]
    ros2 launch panoptic_depthlab_ros panoptic_depthlab.launch.py odometry_topic:=/odom

Arguments: params_file, image, camera_info, cameras, camera_image, camera_info_pattern,
odometry_topic, namespace, use_sim_time, rviz, managed.

odometry_topic:=/odom gives the tracker the camera's own motion from the vehicle's
nav_msgs/Odometry (parameter odometry_topic; empty: the parameters file decides).  Where the
camera sits on the vehicle (camera_mount_xyz, camera_mount_rpy) and odometry_max_age_s come
from the parameters file.

cameras:=[front,left,right] serves several cameras with one node and one model: camera C
is read from camera_image and camera_info_pattern with {camera} replaced by C
(/front/image_raw and /front/camera_info by default) and answered on
/panoptic_depthlab/C/<output>.  Without it (the default) the node has one camera, read
from image and camera_info.

managed:=true starts a lifecycle node (launch_ros ``LifecycleNode``) that waits
unconfigured until a lifecycle manager, or a person, drives it:

    ros2 lifecycle set /panoptic_depthlab configure   # load the model, create publishers
    ros2 lifecycle set /panoptic_depthlab activate    # start processing
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from launch import LaunchDescription

PACKAGE = "panoptic_depthlab_ros"
NODE_NAME = "panoptic_depthlab"


def camera_names(text):
    """The cameras of ``cameras:=...``: ``[front, left]``, ``front,left``, ``['front', 'left']``; "" or [] for none."""
    names = (n.strip().strip("'\"") for n in text.strip().strip("[]").split(","))
    return [n for n in names if n]


def camera_remappings(cameras, image_pattern, info_pattern):
    """Each camera's inputs (``C/image``, ``C/image/compressed``, ``C/camera_info``) onto its topics."""
    remaps = []
    for camera in cameras:
        image = image_pattern.replace("{camera}", camera)
        remaps += [
            (f"{camera}/image", image),
            (f"{camera}/image/compressed", image + "/compressed"),
            (f"{camera}/camera_info", info_pattern.replace("{camera}", camera)),
        ]
    return remaps


def launch_parameters(cameras, odometry_topic):
    """The parameters launch arguments set over the parameters file: ``[]`` or ``[{...}]``.

    Only those given: an empty list has no ROS parameter type, and an empty odometry topic
    leaves the parameters file's.
    """
    given = {}
    if cameras:
        given["cameras"] = cameras
    if odometry_topic:
        given["odometry_topic"] = odometry_topic
    return [given] if given else []


def launch_nodes(context):
    """The node (plain or lifecycle), for one camera or for those of ``cameras``."""
    params_file = LaunchConfiguration("params_file")
    namespace = LaunchConfiguration("namespace")
    use_sim_time = LaunchConfiguration("use_sim_time")
    managed = LaunchConfiguration("managed")
    cameras = camera_names(LaunchConfiguration("cameras").perform(context))
    remappings = [
        ("image", LaunchConfiguration("image")),
        ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
        ("camera_info", LaunchConfiguration("camera_info")),
    ]
    if cameras:
        remappings = camera_remappings(
            cameras,
            LaunchConfiguration("camera_image").perform(context),
            LaunchConfiguration("camera_info_pattern").perform(context),
        )
    per_launch = launch_parameters(cameras, LaunchConfiguration("odometry_topic").perform(context))
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
        parameters=[params_file, {"use_sim_time": use_sim_time, "managed": False}, *per_launch],
        condition=UnlessCondition(managed))
    # Jazzy's launch_ros LifecycleNode requires name and namespace (keyword-only, no
    # defaults) and has no autostart: the node stays unconfigured until told otherwise.
    lifecycle_node = LifecycleNode(
        **common,
        name=NODE_NAME,
        namespace=namespace,
        parameters=[params_file, {"use_sim_time": use_sim_time, "managed": True}, *per_launch],
        condition=IfCondition(managed))
    return [node, lifecycle_node]


def generate_launch_description() -> LaunchDescription:
    """Node with remapped input topics, parameters from a YAML file, optional rviz."""
    share = get_package_share_directory(PACKAGE)
    namespace = LaunchConfiguration("namespace")
    use_sim_time = LaunchConfiguration("use_sim_time")

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
        DeclareLaunchArgument(
            "cameras", default_value="[]",
            description="Several cameras through one node, e.g. [front,left,right] (empty: one camera on "
                        "image and camera_info)"),
        DeclareLaunchArgument(
            "camera_image", default_value="/{camera}/image_raw",
            description="With cameras: each camera's image topic, {camera} replaced by its name"),
        DeclareLaunchArgument(
            "camera_info_pattern", default_value="/{camera}/camera_info",
            description="With cameras: each camera's CameraInfo topic, {camera} replaced by its name"),
        DeclareLaunchArgument(
            "odometry_topic", default_value="",
            description="nav_msgs/Odometry topic of the vehicle (e.g. /odom): the camera's own motion for the "
                        "tracker; empty: the parameters file's odometry_topic (none by default)"),
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (e.g. with ros2 bag play --clock)"),
        DeclareLaunchArgument("rviz", default_value="false", description="Also start rviz2"),
        DeclareLaunchArgument("managed", default_value="false",
                              description="Run as a lifecycle (managed) node: starts unconfigured, "
                                          "configure/activate through ~/change_state"),
    ]

    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        namespace=namespace,
        arguments=["-d", os.path.join(share, "rviz", "panoptic_depthlab.rviz")],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*arguments, OpaqueFunction(function=launch_nodes), rviz])
