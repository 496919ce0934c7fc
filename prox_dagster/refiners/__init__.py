"""Refiner backends behind one protocol (:class:`~prox_dagster.refiners.base.Refiner`)."""

from __future__ import annotations

from typing import Any

from .base import Level, Refiner
from .rules import RulesRefiner
from .signals import RulesConfig


def _rules(**thresholds: Any) -> RulesRefiner:
    return RulesRefiner(RulesConfig(**thresholds))


# backend name -> factory taking the backend's options
BACKENDS = {"rules": _rules}


def build_refiner(backend: str = "rules", **options: Any) -> Refiner:
    """Create the refiner for ``backend`` with its options."""
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown refiner backend {backend!r}; available: {sorted(BACKENDS)}"
                         ) from None
    return factory(**options)


__all__ = ["BACKENDS", "Level", "Refiner", "RulesConfig", "RulesRefiner", "build_refiner"]
