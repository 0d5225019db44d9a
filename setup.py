"""ament_python package definition; also installs with plain pip into a virtualenv."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "disam_ros"

# Console scripts are added as the modules behind them land; each one is a thin `main()`.
CONSOLE_SCRIPTS = [
    "disam-bench = disam_ros.bench:main",
    "disam-synth = disam_ros.data.synthetic.generate:main",
    "disam-build-map = disam_ros.maps.build_map:main",
    "disam-map-info = disam_ros.maps.map_info:main",
    "disam-match-eval = disam_ros.pose.match_eval:main",
    "disam-localizer = disam_ros.ros.localizer_node:main",
    "disam-posegraph = disam_ros.ros.posegraph_node:main",
    "disam-hint-relay = disam_ros.ros.hint_relay:main",
    "disam-bag = disam_ros.data.bags.cli:main",
    "disam-replay = disam_ros.ros.replay:main",
    "disam-record = disam_ros.ros.record:main",
    "disam-eval = disam_ros.eval.offline:main",
    "disam-calibrate = disam_ros.eval.calibrate:main",
    "disam-sequence-eval = disam_ros.eval.sequence_eval:main",
    "disam-slam-eval = disam_ros.eval.slam_eval:main",
    "disam-eval-online = disam_ros.ros.online_eval:main",
    "disam-demo = disam_ros.ros.demo:main",
    "disam-launch = disam_ros.ros.launcher:main",
    "disam-train = disam_ros.training.cli:main",
    "disam-train-condition = disam_ros.training.condition:main",
    "disam-train-keypoints = disam_ros.training.keypoint_train:main",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    package_data={PACKAGE: ["assets/*", "training/recipes/*.yaml"]},
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="disam_ros maintainers",
    maintainer_email="maintainers@disam-ros.dev",
    description="Long-term visual relocalization for ROS 2 with DISAM coarse-to-fine retrieval.",
    license="MIT",
    python_requires=">=3.10",
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
