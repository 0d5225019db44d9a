"""config/disam.rviz shows what the nodes publish: every display's topic is one the localizer or the pose-graph node
really advertises (asked of the ROS graph, not of the docs), with the message type the display reads and a QoS it
can receive; its fixed frame is the pose graph's default map frame."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RVIZ = REPO / "config" / "disam.rviz"
# The message each display reads (rviz_default_plugins' plugin description, message_type of each class).
DISPLAY_TYPES = {
    "rviz_default_plugins/PoseWithCovariance": "geometry_msgs/msg/PoseWithCovarianceStamped",
    "rviz_default_plugins/PoseArray": "geometry_msgs/msg/PoseArray",
    "rviz_default_plugins/Image": "sensor_msgs/msg/Image",
    "rviz_default_plugins/Path": "nav_msgs/msg/Path",
    "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
}


def topic_displays() -> list[dict]:
    doc = yaml.safe_load(RVIZ.read_text())
    return [d for d in doc["Visualization Manager"]["Displays"] if "Topic" in d]


def test_rviz_config_parses_and_every_topic_display_is_one_rviz_knows():
    displays = topic_displays()
    assert len(displays) >= 6
    assert {d["Class"] for d in displays} <= set(DISPLAY_TYPES), "a display class without its message type here"
    assert all(d["Topic"]["Value"].startswith("/disam_") for d in displays)


@pytest.mark.long
def test_every_rviz_topic_is_advertised_by_the_nodes_with_its_type(tiny_eval_world, one_thread):
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.qos import ReliabilityPolicy

    from disam_ros.ros.localizer_node import LocalizerNode
    from disam_ros.ros.posegraph_node import PoseGraphNode

    ns = f"/rviz_{uuid.uuid4().hex[:6]}"
    ctx = rclpy.Context()
    rclpy.init(args=[], context=ctx)
    nodes = []
    try:
        params = {"device": "cpu", "map": str(tiny_eval_world["map"]), "publish_debug_image": True}
        loc = LocalizerNode(context=ctx, namespace=ns,
                            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        nodes.append(loc)
        loc.start()
        pg = PoseGraphNode(context=ctx, namespace=ns)
        nodes.append(pg)
        pg.start()
        advertised = {}
        for n in nodes:
            for name, types in n.get_publisher_names_and_types_by_node(n.get_name(), n.get_namespace()):
                advertised[name] = types
        for d in topic_displays():
            topic = ns + d["Topic"]["Value"]
            assert topic in advertised, f"{d['Name']}: {topic} not advertised; have {sorted(advertised)}"
            assert DISPLAY_TYPES[d["Class"]] in advertised[topic], (d["Name"], advertised[topic])
            if d["Topic"]["Reliability Policy"] == "Reliable":  # a reliable reader hears only reliable writers
                info = loc.get_publishers_info_by_topic(topic)
                assert info and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in info), topic
        fixed = yaml.safe_load(RVIZ.read_text())["Visualization Manager"]["Global Options"]["Fixed Frame"]
        assert fixed == pg.get_parameter("map_frame").value
    finally:
        for n in nodes:
            n.close()
            n.destroy_node()
        rclpy.shutdown(context=ctx)
