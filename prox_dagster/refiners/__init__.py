"""Refiner backends behind one protocol (:class:`~prox_dagster.refiners.base.Refiner`)."""

from __future__ import annotations

from typing import Any

from .base import Level, Refiner
from .lm import RefinerError
from .rules import RulesRefiner
from .signals import RulesConfig


def _rules(**thresholds: Any) -> RulesRefiner:
    return RulesRefiner(RulesConfig(**thresholds))


def _hf(**options: Any) -> Refiner:
    from .hf import HFRefiner

    return HFRefiner(**options)


def _vllm(**options: Any) -> Refiner:
    from .vllm_engine import VLLMRefiner

    return VLLMRefiner(**options)


def _openai(**options: Any) -> Refiner:
    from .openai_server import OpenAIRefiner

    return OpenAIRefiner(**options)


def _classifier(model: str | None = None, keep_kinds: str | None = None,
                preset: str | None = None, **thresholds: Any) -> Refiner:
    from .classifier import ClassifierRefiner

    return ClassifierRefiner(model or None, RulesConfig(**thresholds),
                             keep_kinds=keep_kinds or None, preset=preset or None)


# backend name -> factory taking the backend's options (LM backends import torch/vLLM lazily)
BACKENDS = {"rules": _rules, "hf": _hf, "vllm": _vllm, "openai": _openai,
            "classifier": _classifier}


LM_BACKENDS = ("hf", "vllm", "openai")


def build_refiner(backend: str = "rules", *, resolve: bool = True, **options: Any) -> Refiner:
    """Create the refiner for ``backend`` with its options (no model loads until its first
    prompt). ``resolve=False``: a hub model's commit is taken from what this machine
    remembers, never asked of the hub (for a version computed when the code location loads)."""
    try:
        factory = BACKENDS[backend]
    except KeyError:
        raise ValueError(f"unknown refiner backend {backend!r}; available: {sorted(BACKENDS)}"
                         ) from None
    return factory(**options, resolve=resolve) if backend in LM_BACKENDS else factory(**options)


__all__ = ["BACKENDS", "LM_BACKENDS", "Level", "Refiner", "RefinerError", "RulesConfig", "RulesRefiner",
           "build_refiner"]
