"""Verification: whether a retrieved place is geometrically right, and the metric camera pose that proves it
(the query's local features matched to the map geometry of the best few places, pycolmap's absolute pose).
It sits above `maps` and `pose` and below the relocalizer layers that call it (tracking, eval, ros).

- `verifier.VerifyConfig`, `verifier.Verifier` (verify(rgb, candidates) -> `verifier.Verification`)
"""
