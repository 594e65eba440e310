"""Cosine learning-rate schedule with linear warm-up, timm ``CosineLRScheduler`` semantics.

Written from the formula (timm is not a dependency of the package):

* ``t < warmup_t``: ``lr(t) = warmup_lr_init + t * (base_lr - warmup_lr_init) / warmup_t``.
* otherwise (``warmup_prefix=False``, so ``t`` is NOT shifted by the warm-up):
  ``i = t // t_initial`` (``cycle_mul = 1``); ``t_cur = t - i * t_initial``;
  ``lr(t) = lr_min + 0.5 * (base_lr * decay_rate**i - lr_min) * (1 + cos(pi * t_cur / t_initial))``
  while ``i < cycle_limit``, else ``lr_min``.

Step timing (OFDB-4AD, reference ``main.py``): the optimiser starts at ``warmup_lr_init``
(timm sets it in the constructor) and ``scheduler.step(epoch)`` runs *after* epoch ``epoch``,
so epoch ``e >= 1`` trains at ``lr(e - 1)`` and epochs 0 and 1 both train at
``warmup_lr_init``. :meth:`CosineWarmupSchedule.lr_for_epoch` encodes exactly that.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CosineWarmupSchedule:
    """Per-epoch LR schedule (``t_in_epochs=True``).

    Args:
        base_lr: peak learning rate (the optimiser's ``lr``).
        t_initial: cycle length in epochs (the reference: ``epochs``).
        lr_min: floor of the cosine.
        warmup_t: warm-up length in epochs (0 disables the warm-up).
        warmup_lr_init: LR at ``t = 0`` of the warm-up.
        cycle_limit: number of cosine cycles; after them the LR stays at ``lr_min``.
        decay_rate: peak multiplier per completed cycle.

    Example:
        >>> s = CosineWarmupSchedule(0.1, t_initial=20000)
        >>> s.lr_for_epoch(0) == s.lr_for_epoch(1) == 1e-6
        True
    """

    base_lr: float
    t_initial: int
    lr_min: float = 1e-5
    warmup_t: int = 5
    warmup_lr_init: float = 1e-6
    cycle_limit: int = 1
    decay_rate: float = 1.0

    def __post_init__(self) -> None:
        if self.t_initial < 1:
            raise ValueError(f"t_initial must be >= 1, got {self.t_initial}")
        if self.warmup_t < 0:
            raise ValueError(f"warmup_t must be >= 0, got {self.warmup_t}")
        if self.base_lr <= 0 or self.lr_min < 0 or self.warmup_lr_init < 0:
            raise ValueError(
                f"learning rates must be positive (lr_min/warmup_lr_init >= 0), got base_lr={self.base_lr}, "
                f"lr_min={self.lr_min}, warmup_lr_init={self.warmup_lr_init}"
            )

    def lr_at(self, t: int) -> float:
        """timm's ``_get_lr(t)``: the value ``scheduler.step(t)`` writes into the optimiser."""
        if t < self.warmup_t:
            return self.warmup_lr_init + t * (self.base_lr - self.warmup_lr_init) / self.warmup_t
        i = t // self.t_initial
        if i >= self.cycle_limit:
            return self.lr_min
        t_cur = t - i * self.t_initial
        lr_max = self.base_lr * self.decay_rate**i
        return self.lr_min + 0.5 * (lr_max - self.lr_min) * (1.0 + math.cos(math.pi * t_cur / self.t_initial))

    def lr_for_epoch(self, epoch: int) -> float:
        """LR used while training epoch ``epoch`` (0-based) under the reference step timing."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch == 0:
            return self.warmup_lr_init if self.warmup_t else self.lr_at(0)
        return self.lr_at(epoch - 1)

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> "CosineWarmupSchedule":
        return cls(**state)
