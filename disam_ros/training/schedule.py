"""Step-indexed schedule: linear lr decay, linear loss-weight ramps and the random -> hard negative switch.

Everything is a pure function of the 0-based optimisation step, so a resumed run recomputes the same
values from the step counter alone (no scheduler state to save) and tests can check hand-computed numbers.
Paper, Sec. V-B: lr decays linearly from 2e-4 to 0; lambda_FCL, lambda_Triplet, lambda_SAM ramp linearly
from 0; random (flip) negatives first, hard negatives (closest of K=10) later.
"""
from __future__ import annotations

from dataclasses import dataclass

from disam_ros.model.objective import LossWeights

from .recipe import Recipe


@dataclass(frozen=True)
class Schedule:
    steps: int
    lr: float
    lr_decay_start: float = 0.0
    ramp_end: float = 1.0
    ramp_keys: tuple[str, ...] = ("fcl", "triplet_fcl", "sam", "triplet_sam", "sup")
    hard_negatives_from: float = 0.5
    num_negatives: int = 10

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> Schedule:
        s = recipe.schedule
        return cls(steps=s.steps, lr=s.lr, lr_decay_start=s.lr_decay_start, ramp_end=s.ramp_end,
                   ramp_keys=tuple(s.ramp_keys), hard_negatives_from=s.hard_negatives_from,
                   num_negatives=s.num_negatives)

    @property
    def decay_start_step(self) -> int:
        return min(round(self.lr_decay_start * self.steps), self.steps - 1)

    @property
    def hard_start_step(self) -> int:
        return round(self.hard_negatives_from * self.steps)

    def lr_at(self, step: int) -> float:
        """lr until `decay_start_step`, then linear to 0 at `steps` (the last step still moves a little)."""
        start = self.decay_start_step
        if step < start:
            return self.lr
        return self.lr * max(0.0, 1.0 - (step - start) / (self.steps - start))

    def ramp_at(self, step: int) -> float:
        """Fraction in [0, 1] applied to the ramped weights: 0 at step 0, 1 from `ramp_end * steps`."""
        return min(1.0, step / (self.ramp_end * self.steps))

    def weights_at(self, base: LossWeights, step: int) -> LossWeights:
        keys = tuple(k for k in self.ramp_keys if k != "sup")
        return base.ramped(self.ramp_at(step), keys=keys)

    def sup_weight_at(self, weight: float, step: int) -> float:
        return weight * (self.ramp_at(step) if "sup" in self.ramp_keys else 1.0)

    def hard_negatives_at(self, step: int) -> bool:
        """True once the triplet terms should mine the closest of K candidates (K=1 means never)."""
        return self.num_negatives > 1 and step >= self.hard_start_step
