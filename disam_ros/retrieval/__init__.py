"""Retrieval: map building, the map format, coarse-to-fine search, spatial prior, results (no ROS imports).

Public API::

    from disam_ros.retrieval import LocalizationMap, Localizer, SearchConfig, RetrievalResult, SpatialPrior
    from disam_ros.retrieval import MapError, build_map, merge_shards, DescriptorSettings, MODES
"""
# The CLI module `build_map` is imported before the function of the same name is bound, so the package
# attribute stays the function no matter which is imported first (the console script finds the module in
# sys.modules).
from .build_map import MapBuildConfig, build_map_from_bag, build_map_from_folder
from .builder import MapFrame, build_map, merge_shards
from .descriptors import MODES, DescriptorSettings, settings_for_mode
from .localization_map import LocalizationMap
from .map_format import MapError
from .prior import SpatialPrior
from .result import RetrievalResult
from .search import Localizer, SearchConfig, verify_map

__all__ = [
    "MODES",
    "DescriptorSettings",
    "LocalizationMap",
    "MapBuildConfig",
    "Localizer",
    "MapError",
    "MapFrame",
    "RetrievalResult",
    "SearchConfig",
    "SpatialPrior",
    "build_map",
    "build_map_from_bag",
    "build_map_from_folder",
    "merge_shards",
    "settings_for_mode",
    "verify_map",
]

# Sequence localization and calibrated confidence (issue 10): filter / window over the place graph.
from .calibration import Calibration, ece, fit_isotonic, fit_logistic, precision_coverage, reliability  # noqa: E402
from .place_graph import PlaceGraph  # noqa: E402
from .sequence import ObservationModel, SequenceConfig, SequenceEstimate, SequenceLocalizer  # noqa: E402

__all__ += [
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
