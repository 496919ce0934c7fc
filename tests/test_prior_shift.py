"""Adapting the line threshold to a shard's share of content lines (label shift): EM, the share
model's inputs and how documents' estimates make a shard's."""

import numpy as np
import pytest

from prox_dagster.refiners.line_features import FEATURE_NAMES, chunk_features
from prox_dagster.refiners.prior_shift import (SHARE_FEATURES, Reservoir, adjusted,
                                               estimate_prior, raw_threshold, shard_share,
                                               share_features)


def _balanced_posteriors(prior: float, n: int, seed: int) -> np.ndarray:
    """Scores of a model that is calibrated at a content share of one half: content ~ N(1, 1),
    noise ~ N(-1, 1), so the posterior at one half is sigmoid(2x)."""
    rng = np.random.default_rng(seed)
    content = rng.random(n) < prior
    x = np.where(content, rng.normal(1.0, 1.0, n), rng.normal(-1.0, 1.0, n))
    return 1 / (1 + np.exp(-2 * x))


@pytest.mark.parametrize("prior", [0.08, 0.3, 0.55, 0.85])
def test_em_recovers_the_share_of_content_lines(prior):
    assert estimate_prior(_balanced_posteriors(prior, 40_000, seed=1)) == \
        pytest.approx(prior, abs=0.02)


def test_the_estimate_is_clipped_and_defined_for_nothing():
    assert estimate_prior(np.zeros(0)) == 0.5
    assert estimate_prior(np.full(100, 1e-9)) == 0.02
    assert estimate_prior(np.full(100, 1 - 1e-9)) == 0.98


def test_share_features_describe_a_documents_lines_each_counted_once():
    lines = ["- Home", "- News", "Contact us",
             "The council approved the new budget for the library after a long debate.",
             "It opens next spring, the mayor said on Tuesday evening."]
    matrix, indices = chunk_features(lines)
    probabilities = np.array([0.05, 0.1, 0.3, 0.9, 0.7])
    row = dict(zip(SHARE_FEATURES, share_features(probabilities, matrix)))
    assert len(row) == len(SHARE_FEATURES) and len(indices) == 5
    assert row["mean_p"] == pytest.approx(0.41)
    assert (row["share_p20"], row["share_p50"], row["share_p80"]) == (0.6, 0.4, 0.2)
    assert row["log_lines"] == pytest.approx(np.log1p(5))
    assert row["bullet_share"] == 0.4 and row["long_sentence_share"] == 0.4
    assert row["ends_punct_share"] == 0.4
    assert row["nav_word_share"] >= 0.4  # Home, News (and Contact us)
    assert row["repeated_share"] == 0.0  # no shard: nothing repeats
    assert row["em_share"] == estimate_prior(probabilities)
    words = matrix[:, FEATURE_NAMES.index("log_words")]
    assert row["mean_log_words"] == pytest.approx(float(words.mean()))
    assert share_features(np.zeros(0), np.zeros((0, len(FEATURE_NAMES)))) == \
        [0.0] * len(SHARE_FEATURES)


def test_a_shards_share_weighs_each_documents_estimate_by_its_lines():
    # a 90-line page that is a tenth content and a 10-line text that is all content
    assert shard_share(np.array([0.1, 1.0]), np.array([90, 10])) == pytest.approx(0.19)
    assert shard_share(np.array([-0.3, 0.0]), np.array([5, 5])) == 0.02  # clipped
    assert shard_share(np.array([1.4]), np.array([3])) == 0.98
    assert shard_share(np.zeros(0), np.zeros(0)) == 0.5  # nothing to go on


def test_one_raw_threshold_decides_as_the_adjusted_posteriors_do():
    p = np.random.default_rng(2).random(10_000)
    for prior in (0.05, 0.2, 0.5, 0.9):
        for t in (0.1, 0.3, 0.5):
            by_posterior = adjusted(p, prior) >= t
            by_raw = p >= raw_threshold(t, prior)
            assert (by_posterior != by_raw).sum() <= 1  # float rounding at the boundary
    np.testing.assert_allclose(adjusted(p, 0.5), np.clip(p, 1e-6, 1 - 1e-6))
    # a shard that is mostly chrome needs more evidence to keep a line, one that is mostly
    # text less
    assert raw_threshold(0.2, 0.05) > raw_threshold(0.2, 0.5) > raw_threshold(0.2, 0.9)


def test_the_reservoir_is_bounded_uniform_and_the_same_for_the_same_stream():
    a, b = Reservoir(50), Reservoir(50)
    assert list(a.passing(range(10_000))) == list(range(10_000))  # passes every item on
    for item in range(10_000):
        b.offer(item)
    assert a.items == b.items and len(a.items) == 50 and len(set(a.items)) == 50
    assert 3_000 < np.mean(a.items) < 7_000  # not the stream's first items
    short = Reservoir(50)
    for item in range(7):
        short.offer(item)
    assert short.items == list(range(7))
    assert Reservoir(50, seed=1).items == [] and \
        sorted(list(Reservoir(5).passing("abcdefgh"))) == list("abcdefgh")
