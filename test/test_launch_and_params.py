"""Launch file, YAML defaults and the parameter table agree with the real node;
run-time parameter changes through the real parameter services; start-up
failures are clear.  (``launch`` / ``launch_ros`` are not installable here, so
the launch file is checked by compiling and reading its syntax tree.)"""

from __future__ import annotations

import ast
import dataclasses
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from node_utils import NodeHarness, image_msg, random_image
from panoptic_depthlab_ros.node_outputs import OUTPUTS
from panoptic_depthlab_ros.ros.parameters import DYNAMIC, PARAMETERS, SPECS, NodeSettings
from pdl_testing import REPO

LAUNCH = REPO / "launch" / "panoptic_depthlab.launch.py"
YAML = REPO / "config" / "panoptic_depthlab.yaml"
RVIZ = REPO / "rviz" / "panoptic_depthlab.rviz"
BUILTIN = {"use_sim_time", "start_type_description_service"}  # declared by rclpy itself


def _yaml_params() -> dict:
    return yaml.safe_load(YAML.read_text())["panoptic_depthlab"]["ros__parameters"]


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name
    ]


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


# --------------------------------------------------------------------- launch file
def test_launch_file_compiles_and_declares_its_arguments() -> None:
    source = LAUNCH.read_text()
    compile(source, str(LAUNCH), "exec")
    tree = ast.parse(source)
    args = {c.args[0].value: c for c in _calls(tree, "DeclareLaunchArgument")}
    assert {"params_file", "image", "camera_info", "namespace", "use_sim_time", "rviz", "managed"} <= set(args)
    assert _kw(args["rviz"], "default_value").value == "false"
    assert _kw(args["use_sim_time"], "default_value").value == "false"
    assert _kw(args["managed"], "default_value").value == "false"
    for call in args.values():
        assert _kw(call, "description") is not None
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    consts = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {
        "panoptic_depthlab_node",
        "panoptic_depthlab",
        "rviz2",
        "panoptic_depthlab.rviz",
        "panoptic_depthlab.yaml",
    } <= consts
    assert RVIZ.is_file() and YAML.is_file()


def test_launch_managed_path_is_a_jazzy_lifecycle_node() -> None:
    """Jazzy's launch_ros LifecycleNode takes name and namespace as required keywords
    (a ``**dict`` would hide them) and has no autostart; each node gets its ``managed``."""
    tree = ast.parse(LAUNCH.read_text())
    (lifecycle,) = _calls(tree, "LifecycleNode")
    (plain,) = [c for c in _calls(tree, "Node") if _kw(c, "package") is None]  # not rviz
    for call, managed, condition in ((lifecycle, True, "IfCondition"), (plain, False, "UnlessCondition")):
        assert _kw(call, "name") is not None and _kw(call, "namespace") is not None
        assert _kw(call, "autostart") is None
        params = _kw(call, "parameters").elts[1]
        values = {k.value: v for k, v in zip(params.keys, params.values, strict=True)}
        assert values["managed"].value is managed
        cond = _kw(call, "condition")
        assert cond.func.id == condition and cond.args[0].id == "managed"


def _launch_remappings() -> dict[str, ast.AST]:
    tree = ast.parse(LAUNCH.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "remappings":
            return {elt.elts[0].value: elt.elts[1] for elt in node.value.elts}
    raise AssertionError("no `remappings = [...]` in the launch file")


def test_launch_remappings_are_the_node_inputs() -> None:
    from panoptic_depthlab_ros.ros.node import INPUT_CAMERA_INFO, INPUT_COMPRESSED, INPUT_IMAGE

    assert set(_launch_remappings()) == {INPUT_IMAGE, INPUT_COMPRESSED, INPUT_CAMERA_INFO}


def _node_topics(ros_context, cli: list[str]) -> tuple[dict, dict]:
    """The real node's subscribed and published topics (with their types) when started with ``cli``."""
    from panoptic_depthlab_ros.ros.node import PanopticDepthLabNode

    node = PanopticDepthLabNode(context=ros_context, cli_args=cli)
    try:
        subs = dict(node.get_subscriber_names_and_types_by_node("panoptic_depthlab", "/"))
        pubs = dict(node.get_publisher_names_and_types_by_node("panoptic_depthlab", "/"))
    finally:
        node.destroy_node()
    return subs, pubs


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_remapped_names_exist_on_the_node(ros_context, tiny_checkpoint, transport: str) -> None:

    # What the launch file does with image:=/cam/front/image_raw camera_info:=/cam/front/camera_info
    targets = {
        "image": "/cam/front/image_raw",
        "image/compressed": "/cam/front/image_raw/compressed",
        "camera_info": "/cam/front/camera_info",
    }
    assert set(targets) == set(_launch_remappings())
    cli = ["--ros-args"] + [a for k, v in targets.items() for a in ("-r", f"{k}:={v}")]
    cli += [
        "-p",
        f"checkpoint:={tiny_checkpoint}",
        "-p",
        "device:=cpu",
        "-p",
        f"image_transport:={transport}",
    ]
    subs, pubs = _node_topics(ros_context, cli)
    image_topic = targets["image/compressed" if transport == "compressed" else "image"]
    expected_type = "sensor_msgs/msg/CompressedImage" if transport == "compressed" else "sensor_msgs/msg/Image"
    assert subs[image_topic] == [expected_type]
    assert subs["/cam/front/camera_info"] == ["sensor_msgs/msg/CameraInfo"]
    assert "/image" not in subs and "/camera_info" not in subs
    # Every node topic of the rviz layout is published, with the type rviz shows it as.
    rviz_topics = {
        line.split("Value:")[1].strip()
        for line in RVIZ.read_text().splitlines()
        if "Value: /panoptic_depthlab/" in line
    }
    assert {"/panoptic_depthlab/markers", "/panoptic_depthlab/points"} <= rviz_topics
    assert rviz_topics <= set(pubs), rviz_topics - set(pubs)
    assert pubs["/panoptic_depthlab/markers"] == ["visualization_msgs/msg/MarkerArray"]
    assert pubs["/panoptic_depthlab/points"] == ["sensor_msgs/msg/PointCloud2"]
    assert pubs["/panoptic_depthlab/segments"] == ["panoptic_depthlab_ros/msg/SegmentDepthArray"]
    assert pubs["/diagnostics"] == ["diagnostic_msgs/msg/DiagnosticArray"]


def _launch_functions(*names: str) -> dict:
    """The launch file's plain helper functions, run without ``launch`` installed."""
    tree = ast.parse(LAUNCH.read_text())
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    namespace: dict = {}
    exec(compile(ast.Module(body=defs, type_ignores=[]), str(LAUNCH), "exec"), namespace)  # noqa: S102
    return {name: namespace[name] for name in names}


@pytest.mark.parametrize(
    "text,names",
    [
        ("[front,left,right]", ["front", "left", "right"]),
        ("[front, left]", ["front", "left"]),
        ("['front', 'rear/left']", ["front", "rear/left"]),
        ("front", ["front"]),
        ("[]", []),
        ("", []),
    ],
)
def test_launch_cameras_argument_is_parsed(text: str, names: list[str]) -> None:
    assert _launch_functions("camera_names")["camera_names"](text) == names


def test_launch_cameras_reach_the_node_as_a_list_with_their_topics(ros_context, tiny_checkpoint) -> None:
    """What the launch file gives the node for cameras:=[front,left]: the parameter (only when
    cameras are given: an empty list has no ROS type) and each camera's remappings."""

    tree = ast.parse(LAUNCH.read_text())
    args = {c.args[0].value: c for c in _calls(tree, "DeclareLaunchArgument")}
    assert _kw(args["cameras"], "default_value").value == "[]"
    assert "{camera}" in _kw(args["camera_image"], "default_value").value
    for call in (*_calls(tree, "LifecycleNode"), *[c for c in _calls(tree, "Node") if _kw(c, "package") is None]):
        assert isinstance(_kw(call, "parameters").elts[2], ast.Starred)  # *per_camera: [] or [{"cameras": [...]}]
    f = _launch_functions("camera_names", "camera_remappings")
    cameras = f["camera_names"]("[front,left]")
    remaps = f["camera_remappings"](cameras, "/cams/{camera}/image_raw", "/cams/{camera}/info")
    cli = ["--ros-args"] + [a for k, v in remaps for a in ("-r", f"{k}:={v}")]
    cli += ["-p", f"checkpoint:={tiny_checkpoint}", "-p", "device:=cpu", "-p", f"cameras:=[{','.join(cameras)}]"]
    subs, pubs = _node_topics(ros_context, cli)
    for c in cameras:
        assert subs[f"/cams/{c}/image_raw"] == ["sensor_msgs/msg/Image"]
        assert subs[f"/cams/{c}/info"] == ["sensor_msgs/msg/CameraInfo"]
        assert pubs[f"/panoptic_depthlab/{c}/overlay"] == ["sensor_msgs/msg/Image"]
    assert {k for k, _ in remaps} == {f"{c}/{i}" for c in cameras for i in ("image", "image/compressed", "camera_info")}


# --------------------------------------------------------------------- parameters
def test_yaml_and_table_agree() -> None:
    values = _yaml_params()
    assert list(values) == [p.name for p in PARAMETERS]  # same keys, same order
    for spec in PARAMETERS:
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default  # YAML lists
        assert type(values[spec.name]) is type(default), spec.name
        assert values[spec.name] == default, spec.name
    assert {f.name for f in dataclasses.fields(NodeSettings)} == set(SPECS)


def test_publish_switches_come_from_the_output_table() -> None:
    switches = [p.name for p in PARAMETERS if p.name.startswith("publish_")]
    assert switches == [f"publish_{o.name}" for o in OUTPUTS]  # one per output, in publish order
    for o in OUTPUTS:
        spec = SPECS[f"publish_{o.name}"]
        assert spec.default is True and not spec.dynamic
        assert o.description in spec.description and f"~/{o.name}" in spec.description
        assert ("Needs camera_info." in spec.description) == o.needs_intrinsics


def test_every_parameter_is_described_and_bounded() -> None:
    from rcl_interfaces.msg import ParameterType

    for spec in PARAMETERS:
        d = spec.descriptor()
        assert len(d.description) > 20, spec.name
        assert d.read_only == (spec.name not in DYNAMIC)
        if d.type in (ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_DOUBLE):
            ranges = d.integer_range or d.floating_point_range
            assert len(ranges) == 1, f"{spec.name} has no range"
            assert ranges[0].from_value <= spec.default <= ranges[0].to_value, spec.name
        if d.type == ParameterType.PARAMETER_STRING and spec.name not in ("checkpoint", "odometry_topic"):  # paths
            assert spec.default in spec.choices and "one of" in d.additional_constraints, spec.name
    assert DYNAMIC == {
        "center_threshold",
        "nms_kernel",
        "top_k",
        "stuff_area",
        "thing_area",
        "depth_erosion_px",
        "overlay_near_m",
        "overlay_far_m",
    } | {name for name in SPECS if name.startswith("tracking_")}


def test_node_declares_exactly_the_yaml(ros_context, tiny_checkpoint) -> None:
    from panoptic_depthlab_ros.ros.node import PanopticDepthLabNode

    node = PanopticDepthLabNode(
        context=ros_context,
        cli_args=["--ros-args", "--params-file", str(YAML), "-p", f"checkpoint:={tiny_checkpoint}"],
    )
    try:
        declared = set(node.list_parameters([], 0).names) - BUILTIN
        values = _yaml_params()
        assert declared == set(values)
        for name, value in values.items():
            if name == "cameras":  # an empty list is "not set" to rclpy: no cameras, the single camera of old
                assert node.settings.cameras == () and len(node.cameras) == 1
            elif name != "checkpoint":
                assert node.get_parameter(name).value == value, name
        described = {d.name: d for d in node.describe_parameters(sorted(declared))}
        assert described["center_threshold"].floating_point_range[0].to_value == 1.0
        assert described["nms_kernel"].integer_range[0].step == 2
        assert described["checkpoint"].read_only and not described["overlay_far_m"].read_only
        assert node.settings.device == "auto" and str(node.pipeline.predictor.device) == "cpu"
        assert node.pipeline.predictor.flip_average is False  # one network pass per frame unless asked
        assert node.pipeline.predictor.model_config.input_scale == 1.0  # -1 = the checkpoint's
    finally:
        node.destroy_node()
    flipping = PanopticDepthLabNode(
        context=ros_context,
        cli_args=["--ros-args", "--params-file", str(YAML), "-p", f"checkpoint:={tiny_checkpoint}"]
        + ["-p", "flip_average:=true", "-p", "input_scale:=1.5"],
    )
    try:
        assert flipping.pipeline.predictor.flip_average is True
        assert flipping.pipeline.predictor.model_config.input_scale == 1.5
    finally:
        flipping.destroy_node()


def test_fusion_defaults_are_the_checkpoints(ros_context, tiny_checkpoint) -> None:
    """At the YAML's -1 the checkpoint's own fusion settings apply (the tiny test model
    is saved with stuff_area 64, not Detectron2's 2048); an explicit value overrides
    them; setting -1 at run time goes back to the checkpoint's value."""
    from rclpy.parameter import Parameter

    from panoptic_depthlab_ros.checkpoint import load_checkpoint
    from panoptic_depthlab_ros.ros.node import PanopticDepthLabNode
    from panoptic_depthlab_ros.ros.parameters import FROM_CHECKPOINT, FUSION

    saved = load_checkpoint(tiny_checkpoint).postprocess
    assert saved.stuff_area == 64
    assert all(_yaml_params()[name] == FROM_CHECKPOINT for name in FUSION)
    assert all(SPECS[name].bounds[0] == FROM_CHECKPOINT for name in FUSION)
    assert all("checkpoint" in SPECS[name].description for name in FUSION)
    cli = ["--ros-args", "--params-file", str(YAML), "-p", f"checkpoint:={tiny_checkpoint}"]
    node = PanopticDepthLabNode(context=ros_context, cli_args=[*cli, "-p", "nms_kernel:=5"])
    try:
        assert node.pipeline.postprocess == replace(saved, nms_kernel=5)
        for name, value, expected in [
            ("stuff_area", 100, replace(saved, nms_kernel=5, stuff_area=100)),
            ("stuff_area", -1, replace(saved, nms_kernel=5)),
            ("thing_area", 9, replace(saved, nms_kernel=5, thing_area=9)),
            ("thing_area", -1, replace(saved, nms_kernel=5)),
            ("center_threshold", 0.0, replace(saved, nms_kernel=5, center_threshold=0.0)),
            ("nms_kernel", -1, replace(saved, center_threshold=0.0)),
        ]:
            result = node.set_parameters([Parameter(name, value=value)])[0]
            assert result.successful, result.reason
            assert node.pipeline.postprocess == expected, name
    finally:
        node.destroy_node()


# --------------------------------------------------------------------- run-time changes
def test_runtime_parameters_through_the_services(ros_context, tiny_checkpoint) -> None:
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    from panoptic_depthlab_ros.predictor import Predictor
    from panoptic_depthlab_ros.tracker import Tracker
    from panoptic_depthlab_ros.visualize import overlay

    h = NodeHarness(ros_context, tiny_checkpoint, params={"stuff_area": 64, "qos_reliability": "reliable"})
    try:
        client = AsyncParameterClient(h.probe, "panoptic_depthlab")
        assert client.wait_for_services(timeout_sec=15.0)

        def call(future):
            h.wait_for(future.done, 15, "the parameter service")
            return future.result()

        def set_one(name, value):
            return call(client.set_parameters([Parameter(name, value=value)])).results[0]

        ok = call(
            client.set_parameters_atomically(
                [
                    Parameter("center_threshold", value=0.3),
                    Parameter("depth_erosion_px", value=1),
                    Parameter("overlay_near_m", value=70.0),
                    Parameter("overlay_far_m", value=90.0),
                ]
            )
        ).result
        assert ok.successful, ok.reason
        for name, value, words in [
            ("checkpoint", "/elsewhere.safetensors", "read-only"),
            ("device", "cuda", "read-only"),
            ("publish_overlay", False, "read-only"),
            ("overlay_near_m", 95.0, "overlay_far_m (90) must be greater than overlay_near_m (95)"),
            ("nms_kernel", 4, "nms_kernel"),
            ("center_threshold", 1.5, "center_threshold"),
        ]:
            result = set_one(name, value)
            assert not result.successful, name
            assert words in result.reason, (name, result.reason)
        got = call(client.get_parameters(["center_threshold", "overlay_near_m", "checkpoint"])).values
        assert (got[0].double_value, got[1].double_value, got[2].string_value) == (
            0.3,
            70.0,
            str(tiny_checkpoint),
        )

        # The next frame uses the new thresholds and colours.
        h.wait_connected()
        bgr = random_image(21)
        h.image_pub.publish(image_msg(bgr, stamp=(90, 0)))
        h.wait_for(lambda: h.answered((90, 0)), 60, "answer")
        reference = Predictor.from_checkpoint(tiny_checkpoint, "cpu")
        reference.postprocess = replace(reference.postprocess, center_threshold=0.3, stuff_area=64, depth_erosion_px=1)
        want = reference.predict(bgr)
        want = want.with_tracks(Tracker().update(want, stamp_ns=90 * 10**9, image=bgr).tracks)  # the node's first frame
        seg = h.answer("segments", (90, 0))
        assert [s.id for s in seg.segments] == [s.id for s in want.segments]
        assert [s.depth_valid_pixels for s in seg.segments] == [s.depth_valid_pixels for s in want.segments]
        picture = h.answer("overlay", (90, 0))
        np.testing.assert_array_equal(
            np.frombuffer(picture.data, np.uint8).reshape(64, 128, 3),
            overlay(bgr, want, near=70.0, far=90.0),
        )
    finally:
        h.close()


# --------------------------------------------------------------------- start-up failures
@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            {"checkpoint": "{tmp}/missing.safetensors"},
            ["{tmp}/missing.safetensors", "does not exist"],
        ),
        (
            {"checkpoint": "{tmp}/garbage.safetensors"},
            ["{tmp}/garbage.safetensors", "not a safetensors file"],
        ),
        ({"device": "cuda"}, ["CUDA is not available"]),
        ({"device": "gpu"}, ["device must be one of auto, cpu, cuda, got 'gpu'"]),
        ({"top_k": 0}, ["top_k must be at least 1, or -1"]),
        ({"input_scale": 0.1}, ["input_scale must be in 0.25..4, or -1 for the checkpoint's value, got 0.1"]),
        ({"overlay_near_m": 5}, ["overlay_near_m must be a double"]),
        ({"center_threshold": 2.0}, ["center_threshold", "out of range"]),
        ({"overlay_near_m": 80.0}, ["overlay_far_m (60) must be greater than overlay_near_m (80)"]),
        (
            {"backend": "onnxruntime"},
            ["cannot load checkpoint", "tiny.safetensors"],
        ),  # not an .onnx file
        ({"camera_mount_xyz": [1.5, 0.0]}, ["camera_mount_xyz must be 3 finite numbers, got [1.5, 0.0]"]),
        (
            {"camera_mount_rpy": [0.0, math.nan, 0.0]},
            ["camera_mount_rpy must be 3 finite numbers, got [0.0, nan, 0.0]"],
        ),
        ({"camera_mount_rpy": [0, 0, 1]}, ["parameter camera_mount_rpy must be a list of doubles (e.g. [0.0, 0.5"]),
        (
            {"odometry_topic": "/vehicle odom"},
            ["odometry_topic '/vehicle odom' is not a valid topic name: topic name must not contain characters"],
        ),
        (  # several cameras: one mount each (test_multicam_odometry.py has the rest)
            {"odometry_topic": "/odom", "cameras": ["front", "left"]},
            ["camera_mount_xyz has 3 numbers, but odometry_topic with 2 cameras (front, left) needs 6"],
        ),
        ({"odometry_max_age_s": -0.1}, ["odometry_max_age_s", "out of range"]),
        ({"tracking_static_gate": -1.0}, ["tracking_static_gate", "out of range"]),
    ],
)
def test_startup_failures_are_clear(
    ros_context, tiny_checkpoint, tmp_path: Path, overrides: dict, words: list[str]
) -> None:
    import torch
    from rclpy.parameter import Parameter

    from panoptic_depthlab_ros.errors import PanopticDepthLabError
    from panoptic_depthlab_ros.ros.node import PanopticDepthLabNode

    if overrides.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "garbage.safetensors").write_bytes(b"this is not a model")
    values = {"checkpoint": str(tiny_checkpoint), "device": "cpu", **overrides}
    values = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in values.items()}
    with pytest.raises(PanopticDepthLabError) as info:
        PanopticDepthLabNode(
            context=ros_context,
            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
        )
    for w in words:
        assert w.replace("{tmp}", str(tmp_path)) in str(info.value)


def test_odometry_parameters_reach_the_node(ros_context, tiny_checkpoint) -> None:
    """From the parameters file and the command line: the odometry subscription, the mount, the max
    age and the static gate the tracker gets; tracking_static_gate changes at run time."""
    from rclpy.parameter import Parameter
    from rclpy.qos import ReliabilityPolicy

    from panoptic_depthlab_ros.ego_motion import CameraMount
    from panoptic_depthlab_ros.odometry import DEFAULT_MAX_AGE_S
    from panoptic_depthlab_ros.ros.node import ODOMETRY_QOS_DEPTH, PanopticDepthLabNode, odometry_qos
    from panoptic_depthlab_ros.tracker import TrackerConfig

    assert _yaml_params()["odometry_topic"] == "" and _yaml_params()["odometry_max_age_s"] == DEFAULT_MAX_AGE_S
    assert tuple(_yaml_params()["camera_mount_rpy"]) == CameraMount().rpy
    assert _yaml_params()["tracking_static_gate"] == TrackerConfig().static_gate
    cli = ["--ros-args", "--params-file", str(YAML), "-p", f"checkpoint:={tiny_checkpoint}", "-p", "device:=cpu"]
    cli += ["-p", "odometry_topic:=/vehicle/odom", "-p", "odometry_max_age_s:=0.1"]
    cli += ["-p", "camera_mount_xyz:=[1.5, 0.0, 1.2]", "-p", "tracking_static_gate:=11.3"]
    node = PanopticDepthLabNode(context=ros_context, cli_args=cli)
    try:
        subs = dict(node.get_subscriber_names_and_types_by_node("panoptic_depthlab", "/"))
        assert subs["/vehicle/odom"] == ["nav_msgs/msg/Odometry"]
        (sub,) = node.get_subscriptions_info_by_topic("/vehicle/odom")  # as the inputs: qos_reliability
        assert sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        assert odometry_qos(node.settings).depth == ODOMETRY_QOS_DEPTH == 50
        odometry = node.cameras[0].odometry
        assert odometry is not None and odometry.max_age_s == 0.1
        assert odometry.mount == CameraMount(xyz=(1.5, 0.0, 1.2))  # rpy: the default, from the YAML
        assert node.pipeline.settings.tracking.static_gate == 11.3
        result = node.set_parameters([Parameter("tracking_static_gate", value=0.0)])[0]
        assert result.successful, result.reason
        assert node.pipeline.settings.tracking.static_gate == 0.0
        refused = node.set_parameters([Parameter("odometry_topic", value="/elsewhere")])[0]
        assert not refused.successful and "odometry_topic" in refused.reason
    finally:
        node.destroy_node()
    # Tracking off: the odometry is for the tracker, so nothing is subscribed.
    off = PanopticDepthLabNode(context=ros_context, cli_args=[*cli, "-p", "tracking:=false"])
    try:
        subs = dict(off.get_subscriber_names_and_types_by_node("panoptic_depthlab", "/"))
        assert "/vehicle/odom" not in subs and off.cameras[0].odometry is None
    finally:
        off.destroy_node()


@pytest.mark.parametrize(
    ("cameras", "odometry_topic", "given"),
    [
        ([], "", []),
        ([], "/odom", [{"odometry_topic": "/odom"}]),
        (["front", "left"], "", [{"cameras": ["front", "left"]}]),
        (["front"], "/vehicle/odom", [{"cameras": ["front"], "odometry_topic": "/vehicle/odom"}]),
    ],
)
def test_launch_arguments_set_only_the_parameters_given(cameras, odometry_topic, given) -> None:
    tree = ast.parse(LAUNCH.read_text())
    args = {c.args[0].value: c for c in _calls(tree, "DeclareLaunchArgument")}
    assert _kw(args["odometry_topic"], "default_value").value == ""
    assert _launch_functions("launch_parameters")["launch_parameters"](cameras, odometry_topic) == given


def test_empty_checkpoint_selects_the_bundled_model() -> None:
    from panoptic_depthlab_ros.checkpoint import BUNDLED_CHECKPOINT
    from panoptic_depthlab_ros.ros.parameters import resolve_checkpoint

    assert resolve_checkpoint("") == BUNDLED_CHECKPOINT and BUNDLED_CHECKPOINT.is_file()


def test_auto_device_falls_back_to_cpu(ros_context, tiny_checkpoint) -> None:
    import torch
    from rclpy.parameter import Parameter

    from panoptic_depthlab_ros.ros.node import PanopticDepthLabNode

    node = PanopticDepthLabNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("checkpoint", value=str(tiny_checkpoint)),
            Parameter("device", value="auto"),
        ],
    )
    try:
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        assert node.pipeline.predictor.device.type == expected
    finally:
        node.destroy_node()
    assert math.isfinite(node.settings.overlay_far_m)
