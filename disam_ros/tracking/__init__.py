"""Tracking: following a drive over time instead of answering each frame alone. The per-frame `Tracker`
(`tracking.tracker`, what the node and disam-eval run), the Bayes filter over the place graph (`sequence`,
`belief`), the SeqSLAM-style window matcher, the place graph and its motion model, standstill detection,
and the calibration maths that turn a raw tracker score into P(answer within tolerance). The fitted
calibration is stored in the map (`disam_ros.maps.map_calibration`). No ROS imports.

Public API::

    from disam_ros.tracking import SequenceLocalizer, SequenceConfig, PlaceGraph, Calibration, fit_isotonic
    from disam_ros.tracking.tracker import Tracker, TrackerConfig
"""
from .calibration import Calibration, ece, fit_isotonic, fit_logistic, precision_coverage, reliability
from .place_graph import PlaceGraph
from .sequence import ObservationModel, SequenceConfig, SequenceEstimate, SequenceLocalizer

__all__ = [
    "Calibration",
    "ObservationModel",
    "PlaceGraph",
    "SequenceConfig",
    "SequenceEstimate",
    "SequenceLocalizer",
    "ece",
    "fit_isotonic",
    "fit_logistic",
    "precision_coverage",
    "reliability",
]
