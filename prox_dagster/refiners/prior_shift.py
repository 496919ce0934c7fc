"""Adapting the line model to a shard's share of content lines (label shift).

The line model's probabilities are posteriors at a content share of one half; thresholds apply
to the posteriors at the shard's own share, which a small *share model* estimates per document
from how the probabilities spread (:func:`share_features`, :func:`shard_share`). It replaced EM
(Saerens et al. 2002), whose errors cost more content leaving one set out; the measurements are
in ``docs/classifier.md``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

import numpy as np

from .line_features import FEATURE_NAMES

TRAINING_PRIOR = 0.5
MIN_PRIOR, MAX_PRIOR = 0.02, 0.98


def estimate_prior(probabilities: np.ndarray, training_prior: float = TRAINING_PRIOR,
                   iterations: int = 100, tolerance: float = 1e-6) -> float:
    """The content share of data whose lines the model gave ``probabilities`` (EM; linear per
    iteration), clipped to [``MIN_PRIOR``, ``MAX_PRIOR``]."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-6, 1 - 1e-6)
    if not len(p):
        return training_prior
    prior = training_prior
    for _ in range(iterations):
        updated = float(adjusted(p, prior, training_prior).mean())
        if abs(updated - prior) < tolerance:
            prior = updated
            break
        prior = updated
    return float(min(max(prior, MIN_PRIOR), MAX_PRIOR))


def adjusted(probabilities: np.ndarray, prior: float,
             training_prior: float = TRAINING_PRIOR) -> np.ndarray:
    """Posteriors at content share ``prior`` from posteriors at ``training_prior``."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-6, 1 - 1e-6)
    a = prior / training_prior * p
    b = (1 - prior) / (1 - training_prior) * (1 - p)
    return a / (a + b)


def raw_threshold(threshold: float, prior: float, training_prior: float = TRAINING_PRIOR) -> float:
    """The model probability at which the posterior at ``prior`` equals ``threshold`` (so one
    comparison per line decides, as before)."""
    odds = threshold / (1 - threshold) * (1 - prior) / prior * training_prior / (1 - training_prior)
    return odds / (1 + odds)


SHARE_FEATURES = [
    "mean_p", "share_p20", "share_p50", "share_p80", "log_lines", "mean_log_words",
    "long_sentence_share", "ends_punct_share", "bullet_share", "nav_word_share",
    "repeated_share", "em_share",
]
_COLUMNS = {name: FEATURE_NAMES.index(name)
            for name in ("log_words", "long_sentence", "ends_punct", "bullet", "nav_word",
                         "shard_doc_share")}


def share_features(probabilities: np.ndarray, matrix: np.ndarray) -> list[float]:
    """What the share model reads of one document: how the line model's ``probabilities`` of
    its non-blank lines spread, and the share of those lines (each counts once, whatever its
    length) that are long sentences, end in punctuation, are bulleted, hold a navigation word or
    repeat across the shard; ``matrix``: their line features."""
    p = np.asarray(probabilities, dtype=np.float64)
    if not len(p):
        return [0.0] * len(SHARE_FEATURES)
    column = {name: matrix[:, j].astype(np.float64) for name, j in _COLUMNS.items()}
    return [float(p.mean()), float((p >= 0.2).mean()), float((p >= 0.5).mean()),
            float((p >= 0.8).mean()), float(np.log1p(len(p))), float(column["log_words"].mean()),
            float((column["long_sentence"] > 0).mean()), float((column["ends_punct"] > 0).mean()),
            float((column["bullet"] > 0).mean()), float((column["nav_word"] > 0).mean()),
            float((column["shard_doc_share"] > 0).mean()), estimate_prior(p)]


def shard_share(estimates: np.ndarray, lines: np.ndarray) -> float:
    """The share of content lines of documents whose share model ``estimates`` and numbers of
    non-blank ``lines`` are given, clipped to [``MIN_PRIOR``, ``MAX_PRIOR``]."""
    lines = np.asarray(lines, dtype=np.float64)
    estimates = np.clip(np.asarray(estimates, dtype=np.float64), 0.0, 1.0)
    if not lines.sum():
        return TRAINING_PRIOR
    return float(min(max(float((estimates * lines).sum() / lines.sum()), MIN_PRIOR), MAX_PRIOR))


class Reservoir:
    """A uniform sample of at most ``size`` items of a stream of unknown length (algorithm R),
    the same sample for the same stream: the generator is seeded."""

    def __init__(self, size: int, seed: int = 0):
        self.size = size
        self.items: list = []
        self._seen = 0
        self._rng = random.Random(seed)

    def offer(self, item) -> None:
        if self._seen < self.size:
            self.items.append(item)
        else:
            j = self._rng.randrange(self._seen + 1)
            if j < self.size:
                self.items[j] = item
        self._seen += 1

    def passing(self, items: Iterable, sample=lambda item: item) -> Iterator:
        """Yield ``items`` unchanged, offering ``sample(item)`` of each."""
        for item in items:
            self.offer(sample(item))
            yield item
