"""Retrieval: which map image looks most like this camera frame. The coarse-to-fine search (coarse top-N by
mean-channel cosine, fine re-rank), the faiss / exact indexes over a loaded map, the spatial prior that
gates the search to a region, the junk-frame gate, and the RetrievalResult every later step reads. The map
itself (format, building, loading) lives in `disam_ros.maps`; following a drive over time lives in
`disam_ros.tracking`. No ROS imports.

Public API::

    from disam_ros.retrieval import Localizer, SearchConfig, RetrievalResult, SpatialPrior
"""
from .prior import SpatialPrior
from .result import RetrievalResult
from .search import Localizer, SearchConfig

__all__ = ["Localizer", "RetrievalResult", "SearchConfig", "SpatialPrior"]
