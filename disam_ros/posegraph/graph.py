"""A ROS-free pose graph on GTSAM's iSAM2: odometry between-factors, the localizer's loop closures (verified hints:
the body seen from a map keyframe) and absolute map-frame priors (unverified retrievals), under a robust kernel.

Frames: odometry poses are T_odom_body, everything the graph returns is T_map_body; the body frame is whatever the
odometry and the hints both describe (here the camera optical frame: a hint is the query CAMERA's pose relative to
a keyframe). Poses and covariances follow disam_ros.posegraph.conventions (ROS order and perturbations in, GTSAM's
inside). Nodes have global, increasing indices; past `max_nodes` the graph restarts at its newest node and older
nodes can no longer be read (bounded memory on a vehicle that never stops).

Anchoring: with no `set_initial`, node 0 gets a loose prior at map == odom (LOOSE_PRIOR_M / LOOSE_PRIOR_RAD: loose
enough that closures move the whole trajectory, never rank-deficient). The map frame can be kilometres and any
angle from the odometry origin, and a robust kernel would reject every closure seen from so far; so the first
closure or absolute prior moves the whole estimate rigidly onto itself (exact, closed form) and the kernel judges
every later one from there. A wrong first measurement would anchor wrongly and the kernel would then reject every
right one (seen on held-out drives: 40-90 m trajectories from one wrong first hint), so measurements are held until
`anchor_agree` of them (default 2, from different keyframes) imply the same map->odom transform within
`anchor_agree_m` / `anchor_agree_deg` plus what the odometry may have drifted between them; the newest of the
agreeing ones anchors, then all held ones go in and the kernel judges them. Until then the graph reports map ==
odom. set_initial anchors at once.
"""
from __future__ import annotations

import bisect
import math
import time
from collections.abc import Sequence

import gtsam
import numpy as np

from disam_ros.geometry import rot_to_quat
from disam_ros.posegraph.anchoring import agrees_with_newest
from disam_ros.posegraph.conventions import (
    adjoint_covariance,
    check_covariance,
    from_pose3,
    gtsam_cov_to_ros,
    noise_models,
    pose_at,
    ros_cov_to_gtsam,
    to_pose3,
)
from disam_ros.posegraph.graph_config import (  # noqa: F401  (re-exported: the package's public names)
    HELD_MAX,
    LOOSE_PRIOR_M,
    LOOSE_PRIOR_RAD,
    MAX_CLOSURES,
    REJECTED_WEIGHT,
    Closure,
    PoseGraphConfig,
)
from disam_ros.posegraph.odometry_guard import check_magnitude
from disam_ros.posegraph.weights import ClosureWeights


def node_key(i: int) -> int:
    return gtsam.symbol("x", i)


def _new_isam() -> gtsam.ISAM2:
    """iSAM2 with QR elimination (Cholesky declared odometry chains of ~1000 nodes under a loose prior
    indeterminate in tests: squaring the information loses too many digits), relinearization considered at every
    update (robust weights only change when a factor is relinearized) but only in the part of the tree the update
    touches (the full check is O(nodes) per update: it doubled the update time at 10k nodes)."""
    params = gtsam.ISAM2Params()
    params.setFactorization("QR")
    params.relinearizeSkip = 1
    params.setRelinearizeThreshold(0.01)
    params.enablePartialRelinearizationCheck = True
    return gtsam.ISAM2(params)


class PoseGraph:
    """Odometry + loop closures -> corrected map-frame trajectory (module docstring); not thread-safe."""

    def __init__(self, config: PoseGraphConfig | None = None) -> None:
        self.config = config or PoseGraphConfig()
        self.closures: list[Closure] = []
        self._isam = _new_isam()
        self._factors, self._values = gtsam.NonlinearFactorGraph(), gtsam.Values()  # pending: since the last update
        self._first = 0  # global index of the oldest node still in the graph
        self._t: list[float] = []  # per live node: time, odometry pose
        self._odom: list[gtsam.Pose3] = []
        self._guess = gtsam.Pose3()  # map-frame estimate of the newest node (seeds the next)
        self._samples: list[tuple[float, gtsam.Pose3]] = []  # raw odometry, bounded by config.odom_buffer
        self._since_m = 0.0  # path length since the newest node
        self._initial: tuple[gtsam.Pose3, np.ndarray] | None = None
        self._anchor: tuple[gtsam.Pose3, gtsam.noiseModel.Base] | None = None  # the graph's factor 0
        self._anchored = False
        self._held: list[tuple[Closure, gtsam.Pose3, np.ndarray]] = []  # waiting to anchor (module docstring)
        self._weights = ClosureWeights(self.config.robust, self.config.robust_k)
        self._carry: gtsam.Pose3 | None = None  # T_map_odom of the chain before a reset_chain()

    def __len__(self) -> int:
        return len(self._t)

    @property
    def newest_node(self) -> int | None:
        """Global index of the newest node, None before the first."""
        return self._first + len(self._t) - 1 if self._t else None

    # ------------------------------------------------------------------------------------------------ input

    def set_initial(self, position: np.ndarray, quat: np.ndarray, covariance: np.ndarray) -> None:
        """A map-frame prior (ROS-order covariance) for node 0 instead of the loose one at map == odom; it also
        anchors the graph, so the first closure is judged by the robust kernel like every other."""
        if self._t:
            raise RuntimeError("set_initial must come before the first add_odometry")
        T = to_pose3(position, quat)
        self._initial = (T, ros_cov_to_gtsam(check_covariance(covariance, "initial"), T.rotation().matrix()))

    def add_odometry(self, t: float, position: np.ndarray, quat: np.ndarray) -> int | None:
        """Odometry T_odom_body at time t (strictly increasing); returns the new node's index, or None when the
        keyframe rule did not fire. Past max_nodes it restarts the graph first (applying what is pending). A position
        beyond max_odom_position_m is refused (ValueError): it would overflow the chain (odometry_guard.py)."""
        t = float(t)
        reason = check_magnitude(position, self.config.max_odom_position_m)
        if reason:
            raise ValueError(reason)
        T = to_pose3(position, quat)
        if not math.isfinite(t):
            raise ValueError(f"odometry stamp must be finite, got {t}")
        if self._samples and not t > self._samples[-1][0]:
            raise ValueError(f"odometry stamp {t:.9f} s is not after the previous {self._samples[-1][0]:.9f} s: "
                             "odometry must arrive in strictly increasing time")
        if self._samples:
            self._since_m += float(np.linalg.norm(T.translation() - self._samples[-1][1].translation()))
        self._samples.append((t, T))
        if len(self._samples) > self.config.odom_buffer + self.config.odom_buffer // 8:
            del self._samples[: len(self._samples) - self.config.odom_buffer]  # trimmed in chunks: amortised O(1)
        if not self._t:
            return self._start(t, T)
        if not self._keyframe_due(t, T):
            return None
        if len(self._t) >= self.config.max_nodes:
            self._restart()
        return self._add_node(t, T)

    def reset_chain(self) -> None:
        """Start a new odometry chain after a clock or odometry restart (odometry_guard.py): the next odometry
        may have any stamp and pose. What was solved stays where callers read it (node indices keep increasing,
        `closures` keeps its reports), but the new chain has no odometry link to it: its first node gets the loose
        prior at the old chain's map->odom (if the odometry frame did not move, the pose carries on; if it did,
        the pose is off until hints correct it), and the graph is unanchored again, so `anchor_agree` agreeing
        hints re-anchor it (a wrong map->odom is corrected rigidly, not fought by the kernel)."""
        self._carry = None
        if self._t:
            self._flush()
            newest = self._first + len(self._t) - 1
            self._carry = self._isam.calculateEstimatePose3(node_key(newest)).compose(self._odom[-1].inverse())
            self._first = newest + 1
        self._isam, self._factors, self._values = _new_isam(), gtsam.NonlinearFactorGraph(), gtsam.Values()
        self._t, self._odom, self._samples, self._since_m = [], [], [], 0.0
        self._initial, self._anchor, self._anchored, self._held = None, None, False, []
        self._weights.clear()

    def add_closure(self, t: float, keyframe_id: int, keyframe_position: np.ndarray, keyframe_quat: np.ndarray,
                    rel_position: np.ndarray, rel_quat: np.ndarray, rel_covariance: np.ndarray) -> Closure | None:
        """A verified hint: the body at time t seen from map keyframe `keyframe_id` (T_key_body, ROS-order
        covariance in the keyframe's frame). Attached to the nearest node within closure_max_dt_s through the
        odometry between t and that node; None when there is none or the odometry does not cover t.

        The keyframe's map pose is the map's and exact, so the between-factor keyframe -> node, error
        Log(meas^-1 T_key^-1 T_node) = Log((T_key meas)^-1 T_node), IS a prior on the node at T_key meas with the
        same GTSAM-convention covariance; it is added as that. A keyframe variable pinned by a tight prior would
        add nothing but cost: shared by every lap that sees it, it ties laps into one clique (p90 update 14 ms
        instead of 1 ms on `disam-bench posegraph`)."""
        T_key, rel = to_pose3(keyframe_position, keyframe_quat), to_pose3(rel_position, rel_quat)
        cov = ros_cov_to_gtsam(check_covariance(rel_covariance, "closure"), rel.rotation().matrix())
        found = self._attach(float(t))
        if found is None:
            return None
        node, delta = found
        closure = Closure(float(t), node, "between", int(keyframe_id), *from_pose3(T_key),
                          *from_pose3(T_key.compose(rel)))
        self._add_measurement(closure, T_key.compose(rel).compose(delta), adjoint_covariance(cov, delta))
        return closure

    def add_absolute(self, t: float, position: np.ndarray, quat: np.ndarray, covariance: np.ndarray
                     ) -> Closure | None:
        """A map-frame pose of the body at time t (an unverified retrieval), as a robust prior on the nearest node
        within closure_max_dt_s; None when there is none."""
        T = to_pose3(position, quat)
        cov = ros_cov_to_gtsam(check_covariance(covariance, "absolute"), T.rotation().matrix())
        found = self._attach(float(t))
        if found is None:
            return None
        node, delta = found
        closure = Closure(float(t), node, "absolute", None, None, None, *from_pose3(T))
        self._add_measurement(closure, T.compose(delta), adjoint_covariance(cov, delta))
        return closure

    def update(self) -> float:
        """One iSAM2 update with everything added since the last (an empty one still relinearizes); refreshes the
        robust weights of recent closures and some older ones (refresh_weights() does all). Returns the ms taken."""
        t0 = time.perf_counter()
        if self._t:
            self._isam.update(self._factors, self._values)
            self._factors, self._values = gtsam.NonlinearFactorGraph(), gtsam.Values()
            self._guess = self._isam.calculateEstimatePose3(node_key(self._first + len(self._t) - 1))
            self._weights.refresh_recent(self._isam.calculateEstimatePose3, self._first + len(self._t) - 1)
        return 1e3 * (time.perf_counter() - t0)

    # ------------------------------------------------------------------------------------------------ output

    def pose(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """Corrected map-frame pose of a node (pending additions are applied first, by one update)."""
        self._flush()
        return from_pose3(self._isam.calculateEstimatePose3(node_key(self._live_node(node))))

    def latest(self) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """t, position, xyzw and the 6x6 ROS-order marginal covariance of the newest node."""
        self._flush()
        i = self._live_node(self._first + len(self._t) - 1)
        T = self._isam.calculateEstimatePose3(node_key(i))
        cov = self._isam.marginalCovariance(node_key(i))
        return (self._t[-1], *from_pose3(T), gtsam_cov_to_ros(0.5 * (cov + cov.T), T.rotation().matrix()))

    def trajectory(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """times (N,), positions (N, 3), xyzw (N, 4) of the nodes in the graph (O(N): for reports, not per frame)."""
        self._flush()
        poses = [from_pose3(self._isam.calculateEstimatePose3(node_key(self._first + j))) for j in range(len(self))]
        return (np.asarray(self._t, np.float64), np.array([p for p, _ in poses]).reshape(-1, 3),
                np.array([q for _, q in poses]).reshape(-1, 4))

    def map_to_odom(self) -> tuple[np.ndarray, np.ndarray]:
        """T_map_odom = T_map_body(newest node) T_odom_body(newest node)^-1: what a tf broadcaster publishes."""
        self._flush()
        i = self._live_node(self._first + len(self._t) - 1)
        return from_pose3(self._isam.calculateEstimatePose3(node_key(i)).compose(self._odom[-1].inverse()))

    def estimates(self, since_node: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """nodes, times, positions (N, 3), xyzw (N, 4) of the live nodes from `since_node` on (older ones are
        skipped): the work is O(returned nodes), whatever the graph holds (the node's ~/path reads the newest)."""
        self._flush()
        start = max(int(since_node), self._first)
        nodes = np.arange(start, self._first + len(self._t), dtype=np.int64)
        poses = [self._isam.calculateEstimatePose3(node_key(int(i))) for i in nodes]
        pos = np.array([T.translation() for T in poses], np.float64).reshape(-1, 3)
        rot = np.array([T.rotation().matrix() for T in poses], np.float64).reshape(-1, 3, 3)
        times = np.asarray(self._t[start - self._first:], np.float64)
        return nodes, times, pos, rot_to_quat(rot) if len(rot) else np.zeros((0, 4))

    def node_positions(self, nodes: Sequence[int]) -> np.ndarray:
        """(N, 3) corrected positions of the given nodes, NaN rows for nodes no longer (or not yet) in the graph."""
        self._flush()
        out = np.full((len(nodes), 3), np.nan)
        end = self._first + len(self._t)
        for k, i in enumerate(nodes):
            if self._first <= i < end:
                out[k] = self._isam.calculateEstimatePose3(node_key(int(i))).translation()
        return out

    # ------------------------------------------------------------------------------------------------ internals

    def _live_node(self, node: int) -> int:
        if not self._t:
            raise RuntimeError("the pose graph has no nodes yet: add odometry first")
        if not self._first <= node < self._first + len(self._t):
            raise IndexError(f"node {node} is not in the graph (nodes {self._first}..{self._first + len(self._t) - 1}"
                             " remain; older ones went when it restarted at max_nodes)")
        return node

    def _flush(self) -> None:
        if self._factors.size() or self._values.size():
            self.update()

    def _start(self, t: float, T: gtsam.Pose3) -> int:
        """The chain's first node: at the initial pose with its prior, or under the loose prior (unanchored) at
        map == odom, or after reset_chain() at the old chain's map->odom."""
        if self._initial is not None:
            mean, noise = self._initial[0], gtsam.noiseModel.Gaussian.Covariance(self._initial[1])
            self._anchored = True
        else:
            mean = T if self._carry is None else self._carry.compose(T)
            noise = gtsam.noiseModel.Diagonal.Sigmas(np.array([LOOSE_PRIOR_RAD] * 3 + [LOOSE_PRIOR_M] * 3))
        self._set_anchor(self._first, mean, noise)
        self._t, self._odom, self._guess = [t], [T], mean
        return self._first

    def _set_anchor(self, node: int, mean: gtsam.Pose3, noise: gtsam.noiseModel.Base) -> None:
        """Factor 0 of a fresh graph: the prior that fixes its gauge (kept so a re-anchor can move it)."""
        self._anchor = (mean, noise)
        self._factors.add(gtsam.PriorFactorPose3(node_key(node), mean, noise))
        self._values.insert(node_key(node), mean)

    def _keyframe_due(self, t: float, T: gtsam.Pose3) -> bool:
        c = self.config
        if not (c.keyframe_m or c.keyframe_deg or c.keyframe_s):
            return True
        turned = math.degrees(np.linalg.norm(gtsam.Rot3.Logmap(self._odom[-1].rotation().between(T.rotation()))))
        return bool((c.keyframe_m and self._since_m >= c.keyframe_m) or (c.keyframe_deg and turned >= c.keyframe_deg)
                    or (c.keyframe_s and t - self._t[-1] >= c.keyframe_s))

    def _add_node(self, t: float, T: gtsam.Pose3) -> int:
        """A node with an odometry between-factor from the previous one, sigma growing with the path travelled."""
        c, d = self.config, self._since_m
        sig_m = max(c.odom_sigma_floor_m, c.odom_sigma_m_per_m * d)
        sig_rad = math.radians(max(c.odom_sigma_floor_deg, c.odom_sigma_deg_per_m * d))
        delta = self._odom[-1].between(T)
        i = self._first + len(self._t)
        noise = gtsam.noiseModel.Diagonal.Sigmas(np.array([sig_rad] * 3 + [sig_m] * 3))
        self._factors.add(gtsam.BetweenFactorPose3(node_key(i - 1), node_key(i), delta, noise))
        self._guess = self._guess.compose(delta)
        self._values.insert(node_key(i), self._guess)
        self._t.append(t)
        self._odom.append(T)
        self._since_m = 0.0
        return i

    def _restart(self) -> None:
        """Bounded memory: a fresh graph holding only the newest node, at its estimate, with its marginal
        covariance as prior (closures already added stay in the report with their last weights). Pending additions
        are applied first; the estimate is then exactly what a caller last read (no extra relinearization step)."""
        self._flush()
        i = self._first + len(self._t) - 1
        T = self._isam.calculateEstimatePose3(node_key(i))
        cov = self._isam.marginalCovariance(node_key(i))
        self._isam = _new_isam()
        self._set_anchor(i, T, gtsam.noiseModel.Gaussian.Covariance(0.5 * (cov + cov.T)))
        self._first, self._t, self._odom = i, self._t[-1:], self._odom[-1:]
        self._weights.clear()

    def _attach(self, t: float) -> tuple[int, gtsam.Pose3] | None:
        """(nearest node within closure_max_dt_s, odometry motion T_body(t)^-1 T_body(node)) or None."""
        if not self._t or not math.isfinite(t):
            return None
        j = bisect.bisect_left(self._t, t)
        j = min((k for k in (j - 1, j) if 0 <= k < len(self._t)), key=lambda k: abs(self._t[k] - t))
        if abs(self._t[j] - t) > self.config.closure_max_dt_s:
            return None
        if self._t[j] == t:
            return self._first + j, gtsam.Pose3()
        at_t = pose_at(self._samples, t)
        return None if at_t is None else (self._first + j, at_t.between(self._odom[j]))

    def _anchor_on(self, node: int, T_map_node: gtsam.Pose3) -> None:
        """On the first map-frame measurement of an unanchored graph: move the whole estimate rigidly so that
        `node` sits at T_map_node (module docstring). Odometry factors are relative, so only factor 0 changes."""
        if self._anchored:
            return
        self._anchored = True
        self.update()
        fix = T_map_node.compose(self._isam.calculateEstimatePose3(node_key(node)).inverse())
        old, values = self._isam.getFactorsUnsafe(), gtsam.Values()
        for j in range(len(self._t)):
            key = node_key(self._first + j)
            values.insert(key, fix.compose(self._isam.calculateEstimatePose3(key)))
        mean, noise = self._anchor
        self._isam, self._factors, self._values = _new_isam(), gtsam.NonlinearFactorGraph(), gtsam.Values()
        self._set_anchor(self._first, fix.compose(mean), noise)
        self._values = values
        for j in range(1, old.size()):
            self._factors.push_back(old.at(j))
        self.update()

    def _add_measurement(self, closure: Closure, measured: gtsam.Pose3, cov: np.ndarray) -> None:
        """A robust prior on the closure's node at `measured` (T_map_node, GTSAM-convention covariance), or held
        (weight 0) while the graph is unanchored and no `anchor_agree` measurements agree (module docstring)."""
        self.closures.append(closure)
        if len(self.closures) > MAX_CLOSURES + MAX_CLOSURES // 8:
            del self.closures[: len(self.closures) - MAX_CLOSURES]
        if not self._anchored:
            self._held = [h for h in self._held if h[0].node >= self._first][-HELD_MAX + 1:]
            self._held.append((closure, measured, cov))
            anchor = self._agreeing()
            if anchor is None:
                closure.weight = 0.0  # not used (yet)
                return
            self._anchor_on(anchor[0].node, anchor[1])
            held, self._held = self._held, []
            for c, m, v in held:
                self._add_factor(c, m, v)
            return
        self._add_factor(closure, measured, cov)

    def _agreeing(self) -> tuple[Closure, gtsam.Pose3] | None:
        """The newest held measurement when anchor_agree of the held ones agree on map->odom (anchoring.py)."""
        views = [(c.keyframe_id, self._odom[c.node - self._first], m) for c, m, _ in self._held]
        c = self.config
        ok = agrees_with_newest(views, c.anchor_agree, c.anchor_agree_m, c.anchor_agree_deg, c.odom_sigma_m_per_m,
                                c.odom_sigma_deg_per_m)
        return self._held[-1][:2] if ok else None

    def _add_factor(self, closure: Closure, measured: gtsam.Pose3, cov: np.ndarray) -> None:
        gauss, noise = noise_models(cov, self.config.robust, self.config.robust_k)
        key = node_key(closure.node)
        self._factors.add(gtsam.PriorFactorPose3(key, measured, noise))
        self._weights.add(closure, key, measured, np.asarray(gauss.R()))

    def refresh_weights(self) -> None:
        """Every live closure's robust weight at the current estimate (~7 us each; update() does the recent ones)."""
        self._flush()
        self._weights.refresh_all(self._isam.calculateEstimatePose3)
