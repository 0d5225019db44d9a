"""Verification: whether a retrieved place is geometrically right, and the metric camera pose that proves it
(the query's local features matched to the map geometry of the best few places, the absolute pose solved).
It sits above `maps` and `pose` and below the relocalizer layers that call it (tracking, eval, ros).

- `verifier.VerifyConfig`, `verifier.Verifier` (verify(rgb, candidates) -> `result.Verification`)
- `result.Verification`, `result.PointTrack`, `result.OUTCOMES`: the records (also importable from verifier)
"""
