"""Maps: what a localization map is on disk and how it is made and checked. The versioned format (manifest
with sha256 per file, descriptors, poses, optional depth record and compact IVF-PQ index), building from
folders or bags (`disam-build-map`), loading with integrity checks, the map <-> model compatibility checks,
`disam-map-info`, and the calibration and observation model a map carries. Searching a map is
`disam_ros.retrieval`'s job; fitting a calibration is `disam_ros.tracking`'s and `disam_ros.eval`'s. No ROS
imports.

Public API::

    from disam_ros.maps import LocalizationMap, MapError, build_map, merge_shards, DescriptorSettings, MODES
    from disam_ros.maps import MapBuildConfig, build_map_from_folder, build_map_from_bag, settings_for_mode
"""
# The CLI module `build_map` is imported before the function of the same name is bound, so the package
# attribute stays the function no matter which is imported first (the console script finds the module in
# sys.modules).
from .build_map import MapBuildConfig, build_map_from_bag, build_map_from_folder
from .builder import MapFrame, build_map, merge_shards
from .descriptors import MODES, DescriptorSettings, settings_for_mode
from .localization_map import LocalizationMap
from .map_format import MapError

__all__ = [
    "MODES",
    "DescriptorSettings",
    "LocalizationMap",
    "MapBuildConfig",
    "MapError",
    "MapFrame",
    "build_map",
    "build_map_from_bag",
    "build_map_from_folder",
    "merge_shards",
    "settings_for_mode",
]
