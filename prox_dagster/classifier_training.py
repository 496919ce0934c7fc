"""Training the ``classifier`` refiner from labelled sets (``prox-dagster train-refiner``, the
``classifier_model`` asset).

The line, kind, share and document models learn from the same features the refiner computes,
every set weighing the same; thresholds are chosen on out-of-fold probabilities per preset
(:data:`PRESETS`, :func:`operating_point`) so that no set's floor fails and no one set picks the
point. How and why: ``docs/classifier.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic_writes import write_text_atomic
from .chunking import DEFAULT_MAX_TOKENS, chunk_documents
from .evaluation import CONTENT_LABELS, IGNORED_LABELS, LabelledSet, naive_keep
from .refiners.classifier import DEFAULT_PRESET, MODEL_FORMAT, MODEL_FORMAT_VERSION
from .refiners.kinds import LETTER_KINDS, LIST, MAIN, MARKUP, NOISE
from .refiners.line_features import (DOC_FEATURES, FEATURE_NAMES, FEATURES_VERSION, ShardLineCounts,
                                     chunk_features, document_features)
from .refiners.prior_shift import SHARE_FEATURES, adjusted, shard_share, share_features
from .words import sentence_like, word_count

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainingSettings:
    line_rounds: int = 300
    line_leaves: int = 31
    doc_rounds: int = 150
    doc_leaves: int = 7
    share_rounds: int = 200
    kind_rounds: int = 150
    share_leaves: int = 7
    learning_rate: float = 0.05
    min_line_recall: float = 0.75
    preset: str = DEFAULT_PRESET
    min_good_kept: float = 0.90
    min_content_units: int = 40
    doc_folds: int = 5
    seed: int = 0
    max_tokens: int = DEFAULT_MAX_TOKENS

    def __post_init__(self):
        for name in ("min_line_recall", "min_good_kept"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a share between 0 and 1, not "
                                 f"{getattr(self, name)}")
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")


@dataclass
class LineData:
    matrix: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    groups: np.ndarray          # index of the set each row comes from
    docs: np.ndarray            # index of the row's document in its set
    naive: np.ndarray           # whether the naive line filter keeps the row's line
    sentence: np.ndarray        # whether the row's line is a sentence (the evaluation's split)
    kinds: np.ndarray           # the row's label character (``M``, ``C``, ``B``, ``1``, ...)
    set_names: list[str] = field(default_factory=list)


def set_line_data(labelled: LabelledSet, tokenizer,
                  max_tokens: int = DEFAULT_MAX_TOKENS) -> LineData:
    """Chunk-level features and labels of every scored line of one set (the set is the shard)."""
    shard = ShardLineCounts(d.text.split("\n") for d in labelled.documents)
    docs = [d for d in labelled.documents if d.line_labels is not None]
    chunked = chunk_documents([d.text for d in docs], tokenizer, max_tokens)
    blocks, labels, doc_index, naive, sentence, kinds = [], [], [], [], [], []
    for d, (doc, chunks) in enumerate(zip(docs, chunked)):
        lines = doc.text.split("\n")
        for chunk in chunks:
            span = lines[chunk.line_start:chunk.line_end + 1]
            matrix, indices = chunk_features(span, shard)
            keep = [k for k, i in enumerate(indices)
                    if doc.line_labels[chunk.line_start + i] not in IGNORED_LABELS]
            if keep:
                blocks.append(matrix[keep])
                labels.extend(doc.line_labels[chunk.line_start + indices[k]] in CONTENT_LABELS
                              for k in keep)
                naive.extend(naive_keep(span[indices[k]]) for k in keep)
                sentence.extend(sentence_like(span[indices[k]], "cjk") for k in keep)
                doc_index.extend([d] * len(keep))
                kinds.extend(doc.line_labels[chunk.line_start + indices[k]] for k in keep)
    matrix = np.vstack(blocks) if blocks else np.zeros((0, len(FEATURE_NAMES)), np.float32)
    n = len(labels)
    return LineData(matrix, np.asarray(labels, dtype=np.float64), np.ones(n),
                    np.zeros(n, dtype=int), np.asarray(doc_index, dtype=int),
                    np.asarray(naive, dtype=bool), np.asarray(sentence, dtype=bool),
                    np.asarray(kinds, dtype="<U1"), [labelled.name])


def line_dataset(sets: Sequence[LabelledSet], tokenizer, max_tokens: int = DEFAULT_MAX_TOKENS,
                 cache: dict | None = None) -> LineData:
    """The line data of every line-labelled set, each set weighing the same in total."""
    parts = []
    for labelled in sets:
        if not labelled.has_line_labels:
            continue
        key = ("lines", labelled.path, max_tokens)
        if cache is not None and key in cache:
            part = cache[key]
        else:
            part = set_line_data(labelled, tokenizer, max_tokens)
            if cache is not None:
                cache[key] = part
        if len(part.labels):
            parts.append(part)
    if not parts:
        raise ValueError("no line-labelled documents to train the line model on")
    # every set weighs the same, and within a set content and noise weigh the same (content is
    # 5-40% of lines), so probabilities centre on 0.5 whatever the set's share of content
    weights = np.concatenate([
        np.where(p.labels > 0, 0.5 / max(p.labels.sum(), 1), 0.5 / max((p.labels == 0).sum(), 1))
        for p in parts])
    return LineData(np.vstack([p.matrix for p in parts]),
                    np.concatenate([p.labels for p in parts]),
                    weights * len(weights) / weights.sum(),
                    np.concatenate([np.full(len(p.labels), g) for g, p in enumerate(parts)]),
                    np.concatenate([p.docs for p in parts]),
                    np.concatenate([p.naive for p in parts]),
                    np.concatenate([p.sentence for p in parts]),
                    np.concatenate([p.kinds for p in parts]),
                    [p.set_names[0] for p in parts])


def train_line_model(data: LineData, rows: np.ndarray, settings: TrainingSettings):
    import lightgbm as lgb

    params = {"objective": "binary", "learning_rate": settings.learning_rate,
              "num_leaves": settings.line_leaves, "min_data_in_leaf": 50,
              "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
              "lambda_l2": 1.0, "seed": settings.seed, "deterministic": True,
              "num_threads": 2, "verbose": -1}
    train = lgb.Dataset(data.matrix[rows], data.labels[rows], weight=data.weights[rows],
                        feature_name=FEATURE_NAMES, categorical_feature=["rule_reason"],
                        free_raw_data=True)
    return lgb.train(params, train, num_boost_round=settings.line_rounds)


def set_scores(probs: np.ndarray, labels: np.ndarray, sets: list[np.ndarray],
                threshold: float) -> tuple[list[float], list[float]]:
    """Keep-F1 and keep-recall of each set (a row mask) when lines at ``threshold`` or above
    are kept."""
    f1s, recalls = [], []
    for members in sets:
        kept, content = probs[members] >= threshold, labels[members] > 0
        tp = float((kept & content).sum())
        recalls.append(tp / max(content.sum(), 1))
        f1s.append(2 * tp / max(kept.sum() + content.sum(), 1))
    return f1s, recalls


THRESHOLDS = np.linspace(0.02, 0.98, 49)


def _best_threshold(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                    min_recall: float) -> float:
    """The threshold with the best keep-F1 averaged over the sets (each set counts the same)
    among those whose keep-recall, averaged over the sets, is at least ``min_recall``."""
    best, best_f1 = 0.5, -1.0
    sets = [groups == g for g in np.unique(groups)]
    for threshold in THRESHOLDS:
        f1s, recalls = set_scores(probs, labels, sets, threshold)
        if np.mean(recalls) >= min_recall and np.mean(f1s) > best_f1:
            best, best_f1 = float(threshold), float(np.mean(f1s))
    return best


@dataclass(frozen=True)
class Preset:
    """How the chunk thresholds trade content kept for noise removed, out of fold: every set
    keeps at least ``min_sentence_recall`` of its content sentences and gains at least
    ``min_gain`` keep-F1 over the naive line filter; among those pairs of thresholds, the one
    with the best keep-F(``beta``) gain over the naive filter, averaged over the sets."""

    min_sentence_recall: float
    min_gain: float
    beta: float


PRESETS = {
    "precision": Preset(min_sentence_recall=0.85, min_gain=0.05, beta=0.5),
    "balanced": Preset(min_sentence_recall=0.90, min_gain=0.05, beta=1.0),
    "recall": Preset(min_sentence_recall=0.95, min_gain=0.0, beta=2.0),
}


def threshold_tradeoff(posteriors: np.ndarray, data: LineData) -> dict:
    """What each candidate threshold does to every set, for its sentences and its short lines
    apart: lines kept and content lines kept, from ``posteriors`` (out of fold, at each set's
    estimated share of content lines; markup rows are removed whatever their posterior), with
    the naive filter's counts. Kept in the model file's training record, so every preset's
    choice (:func:`operating_point`) can be read and redone from it."""
    markup = data.matrix[:, FEATURE_NAMES.index("markup")] > 0
    scored = np.where(markup, -1.0, posteriors)
    content = data.labels > 0
    sets = {}
    for g, name in enumerate(data.set_names):
        mine = data.groups == g
        entry = {"content": int(content[mine].sum()),
                 "naive_kept": int(data.naive[mine].sum()),
                 "naive_content_kept": int((data.naive & content)[mine].sum())}
        for part, rows in (("sentence", mine & data.sentence), ("short", mine & ~data.sentence)):
            p, c = scored[rows], content[rows]
            entry[part] = {"content": int(c.sum()),
                           "kept": [int((p >= t).sum()) for t in THRESHOLDS],
                           "content_kept": [int((c & (p >= t)).sum()) for t in THRESHOLDS]}
        sets[name] = entry
    return {"thresholds": [round(float(t), 4) for t in THRESHOLDS], "sets": sets}


def _f_beta(content_kept, kept, content, beta: float):
    b2 = beta * beta
    return (1 + b2) * content_kept / np.maximum(kept + b2 * content, 1)


def pair_scores(tradeoff: dict, beta: float = 1.0) -> dict:
    """Per set, over every (sentence threshold, short-line threshold) pair (axis 0, axis 1):
    keep-recall, sentence recall, keep-F1 gain over the naive filter and keep-F(``beta``) gain."""
    out = {}
    for name, entry in tradeoff["sets"].items():
        sentence, short = entry["sentence"], entry["short"]
        kept = np.add.outer(np.asarray(sentence["kept"]), np.asarray(short["kept"]))
        content_kept = np.add.outer(np.asarray(sentence["content_kept"]),
                                    np.asarray(short["content_kept"]))
        content = entry["content"]
        naive = (entry["naive_content_kept"], entry["naive_kept"], content)
        out[name] = {
            "keep_recall": content_kept / max(content, 1),
            "sentence_recall": np.repeat(
                (np.asarray(sentence["content_kept"]) / max(sentence["content"], 1))[:, None],
                len(short["kept"]), axis=1),
            "gain": _f_beta(content_kept, kept, content, 1.0) - _f_beta(*naive, 1.0),
            "gain_beta": _f_beta(content_kept, kept, content, beta) - _f_beta(*naive, beta),
        }
    return out


def operating_point(tradeoff: dict, preset: str) -> dict:
    """The (sentence, short-line) thresholds ``preset`` chooses (:data:`PRESETS`): among the
    pairs at which every set keeps the preset's share of its content sentences (only the lowest
    sentence threshold when none does) and gains its minimum over the naive filter, the best
    mean keep-F(beta) gain; where no pair gains enough on every set, the one whose worst set
    gains most. No one set decides: each must clear the floors, and the mean is what is
    maximised. With what each set gets there, out of fold."""
    rule = PRESETS[preset]
    scores = pair_scores(tradeoff, rule.beta)
    thresholds = tradeoff["thresholds"]
    worst_sentence = np.min([s["sentence_recall"] for s in scores.values()], axis=0)
    worst_gain = np.min([s["gain"] for s in scores.values()], axis=0)
    mean_beta = np.mean([s["gain_beta"] for s in scores.values()], axis=0)
    allowed = worst_sentence >= rule.min_sentence_recall - 1e-9
    if not allowed.any():
        allowed = np.zeros_like(allowed)
        allowed[0, :] = True
    enough = allowed & (worst_gain >= rule.min_gain - 1e-9)
    if enough.any():
        at = np.unravel_index(np.argmax(np.where(enough, mean_beta, -np.inf)), enough.shape)
    else:
        at = np.unravel_index(np.argmax(np.where(allowed, worst_gain, -np.inf)), allowed.shape)
    i, j = (int(k) for k in at)
    return {"sentence_threshold": thresholds[i], "short_threshold": thresholds[j],
            "out_of_fold": {name: {"keep_recall": round(float(s["keep_recall"][i, j]), 4),
                                   "sentence_recall": round(float(s["sentence_recall"][i, j]), 4),
                                   "gain_over_naive": round(float(s["gain"][i, j]), 4)}
                            for name, s in scores.items()}}


MIN_KIND_ROWS = 50  # a noise kind with fewer labelled lines is not learned


def train_kind_model(data: LineData, settings: TrainingSettings):
    """The kind model: which kind of noise a line is (:data:`~.kinds.LETTER_KINDS`), learned
    from the noise lines whose set names their kind (markup aside: its detector names it), every
    set weighing the same. With the kinds it names; none (and the one kind, or ``noise``) when
    fewer than two kinds have ``MIN_KIND_ROWS`` lines."""
    import lightgbm as lgb

    markup = data.matrix[:, FEATURE_NAMES.index("markup")] > 0
    usable = (data.labels == 0) & ~markup
    present = [kind for letter, kind in LETTER_KINDS.items()
               if ((data.kinds == letter) & usable).sum() >= MIN_KIND_ROWS]
    if len(present) < 2:
        return None, present or [NOISE]
    letters = [letter for letter, kind in LETTER_KINDS.items() if kind in present]
    rows = np.flatnonzero(usable & np.isin(data.kinds, letters))
    target = np.asarray([letters.index(letter) for letter in data.kinds[rows]])
    per_set = np.bincount(data.groups[rows], minlength=len(data.set_names)).astype(np.float64)
    weights = 1.0 / per_set[data.groups[rows]]
    params = {"objective": "multiclass", "num_class": len(present),
              "learning_rate": settings.learning_rate, "num_leaves": settings.line_leaves,
              "min_data_in_leaf": 30, "feature_fraction": 0.8, "bagging_fraction": 0.8,
              "bagging_freq": 1, "lambda_l2": 1.0, "seed": settings.seed,
              "deterministic": True, "num_threads": 2, "verbose": -1}
    train = lgb.Dataset(data.matrix[rows], target, weight=weights * len(rows) / weights.sum(),
                        feature_name=FEATURE_NAMES, categorical_feature=["rule_reason"])
    return lgb.train(params, train, num_boost_round=settings.kind_rounds), present


def _doc_threshold(probs: np.ndarray, labels: np.ndarray, min_good_kept: float) -> float:
    """The document probability with the best keep-good F1 among those that keep at least
    ``min_good_kept`` of the good documents (a document at the threshold is kept)."""
    good = labels > 0
    if not good.any():
        return 0.5
    order = np.argsort(-probs, kind="stable")
    ranked, ranked_good = probs[order], good[order]
    good_kept = np.cumsum(ranked_good)
    f1 = 2 * good_kept / (np.arange(1, len(ranked) + 1) + good.sum())
    # keeping every document from the top down to a run of equal probabilities, and enough
    eligible = np.r_[ranked[1:] != ranked[:-1], True] & \
        (good_kept >= min_good_kept * good.sum() - 1e-9)
    return float(ranked[int(np.argmax(np.where(eligible, f1, -1.0)))])


def _share_rows(data: LineData, probs: np.ndarray):
    """Per document of every set (its rows are consecutive): the share model's features from
    the line ``probs``, its share of content lines, its number of lines and its set."""
    runs = np.split(np.arange(len(data.labels)), np.flatnonzero(
        (np.diff(data.groups) != 0) | (np.diff(data.docs) != 0)) + 1)
    runs = [r for r in runs if len(r)]
    x = np.asarray([share_features(probs[r], data.matrix[r]) for r in runs], dtype=np.float64)
    return (x.reshape(len(runs), len(SHARE_FEATURES)),
            np.asarray([data.labels[r].mean() for r in runs]),
            np.asarray([len(r) for r in runs], dtype=np.float64),
            np.asarray([data.groups[r[0]] for r in runs], dtype=int))


def _train_share(rows: tuple, members: np.ndarray, settings: TrainingSettings):
    import lightgbm as lgb

    x, y, lines, group = (part[members] for part in rows)
    # every set weighs the same; within a set, a document weighs what its lines do
    per_set = np.bincount(group, weights=lines)
    weights = lines / per_set[group]
    params = {"objective": "regression", "learning_rate": settings.learning_rate,
              "num_leaves": settings.share_leaves, "min_data_in_leaf": 20,
              "seed": settings.seed, "deterministic": True, "num_threads": 2, "verbose": -1}
    return lgb.train(params, lgb.Dataset(x, y, weight=weights * len(weights) / weights.sum(),
                                         feature_name=SHARE_FEATURES),
                     num_boost_round=settings.share_rounds)


def _doc_inputs(labelled: LabelledSet, min_content_units: int) -> list[tuple]:
    """(lines, indices, whole-document line features, label) of every document with a usable
    label: its ``label``, else good when its labelled content has ``min_content_units`` words
    (CJK characters count as words), bad when it has almost none."""
    shard = ShardLineCounts(d.text.split("\n") for d in labelled.documents)
    out = []
    for doc in labelled.documents:
        label = doc.label
        lines = doc.text.split("\n")
        if label is None and doc.line_labels is not None:
            units = sum(word_count(line, "cjk") for line, mark in zip(lines, doc.line_labels)
                        if mark in CONTENT_LABELS)
            label = 1 if units >= min_content_units else (0 if units < 10 else None)
        if label is None:
            continue
        matrix, indices = chunk_features(lines, shard)
        out.append((lines, indices, matrix, label, doc.label is not None))
    return out


def train_classifier(sets: Sequence[LabelledSet], tokenizer,
                     settings: TrainingSettings = TrainingSettings(), *, name: str | None = None,
                     log: Log = print, cache: dict | None = None) -> dict:
    """Train the line, document and share models on ``sets``; the model file's content (see
    :func:`write_model`)."""
    import lightgbm as lgb

    started = time.perf_counter()
    name = name or "classifier-" + "+".join(s.name for s in sets)[:80]
    paths: dict[str, str] = {}
    for labelled in sets:
        # a set is held out by its name: two of one name would train on each other's pages
        if labelled.name in paths:
            raise ValueError(f"two training sets are named {labelled.name!r} "
                             f"({paths[labelled.name]} and {labelled.path}): rename one")
        paths[labelled.name] = labelled.path
    data = line_dataset(sets, tokenizer, settings.max_tokens, cache)
    log(f"line data: {len(data.labels)} lines from {len(data.set_names)} sets "
        f"({int(data.labels.sum())} content)")
    n_groups = len(data.set_names)
    oof = np.zeros(len(data.labels))
    fold_models: dict[int, object] = {}
    if n_groups > 1:
        for group in range(n_groups):
            held = data.groups == group
            fold_models[group] = train_line_model(data, np.flatnonzero(~held), settings)
            oof[held] = fold_models[group].predict(data.matrix[held])
            log(f"  out-of-fold line model without {data.set_names[group]}")
        threshold = _best_threshold(oof, data.labels, data.groups, settings.min_line_recall)
        # the share model learns from probabilities of line models that did not see the
        # document, as a new shard's are; each set's share is estimated by one that did not
        # see the set either
        shares = _share_rows(data, oof)
        priors = []
        for group in range(n_groups):
            mine = shares[3] == group
            model = _train_share(shares, ~mine, settings)
            priors.append(shard_share(model.predict(shares[0][mine]), shares[2][mine]))
        shifted = np.zeros_like(oof)
        for group, prior in enumerate(priors):
            shifted[data.groups == group] = adjusted(oof[data.groups == group], prior)
        tradeoff = threshold_tradeoff(shifted, data)
        points = {preset: operating_point(tradeoff, preset) for preset in PRESETS}
        chosen = points[settings.preset]
        log(f"  {settings.preset}: sentences from {chosen['sentence_threshold']:.2f}, short "
            f"lines from {chosen['short_threshold']:.2f}; out of fold: " + ", ".join(
                f"{set_name} sentence recall {v['sentence_recall']:.3f} gain "
                f"{v['gain_over_naive']:+.3f}" for set_name, v in chosen["out_of_fold"].items()))
        typical_prior = float(np.median(priors))
    line_model = train_line_model(data, np.arange(len(data.labels)), settings)
    if n_groups == 1:
        # no set to hold out: probability 0.5 decides on shards with the set's own content share
        threshold, tradeoff = 0.5, None
        shares = _share_rows(data, line_model.predict(data.matrix))
    share_model = _train_share(shares, np.ones(len(shares[1]), dtype=bool), settings)
    if n_groups == 1:
        typical_prior = shard_share(share_model.predict(shares[0]), shares[2])
        at_half = round(float(adjusted(np.array([threshold]), typical_prior)[0]), 4)
        points = {preset: {"sentence_threshold": at_half, "short_threshold": at_half,
                           "out_of_fold": None} for preset in PRESETS}
        priors = [typical_prior]
    content_shares = [
        {"set": set_name, "estimated": round(prior, 4),
         "labelled": round(float(data.labels[data.groups == g].mean()), 4)}
        for g, (set_name, prior) in enumerate(zip(data.set_names, priors))]
    log("  content shares, estimated (labelled): " + ", ".join(
        f"{c['set']} {c['estimated']:.3f} ({c['labelled']:.3f})" for c in content_shares))
    log(f"line model: {line_model.num_trees()} trees, threshold {threshold:.2f} (typical "
        f"content share {typical_prior:.3f})")
    kind_model, noise_kinds = train_kind_model(data, settings)
    log(f"kind model: {', '.join(noise_kinds)}" + ("" if kind_model is None else
                                                   f" ({kind_model.num_trees()} trees)"))

    def predict_line(model, matrix):
        return model.predict(matrix) if len(matrix) else np.zeros(0)

    doc_x, doc_y, labelled_docs = [], [], []
    for labelled in sets:
        group = data.set_names.index(labelled.name) if labelled.name in data.set_names else None
        model = fold_models.get(group, line_model) if group is not None else line_model
        key = ("docs", labelled.path, settings.min_content_units)
        inputs = cache.get(key) if cache is not None else None
        if inputs is None:
            inputs = _doc_inputs(labelled, settings.min_content_units)
            if cache is not None:
                cache[key] = inputs
        for lines, indices, matrix, label, real in inputs:
            probs = predict_line(model, matrix)
            doc_x.append(document_features(lines, indices, probs, matrix, threshold))
            doc_y.append(label)
            labelled_docs.append(real)
    doc_x_arr = np.asarray(doc_x, dtype=np.float64).reshape(len(doc_x), len(DOC_FEATURES))
    doc_y_arr = np.asarray(doc_y, dtype=np.float64)
    if len(set(doc_y)) < 2:
        raise ValueError("the document model needs good and bad documents: add a set with "
                         "document labels (label: 0/1)")
    doc_params = {"objective": "binary", "learning_rate": settings.learning_rate,
                  "num_leaves": settings.doc_leaves, "min_data_in_leaf": 15,
                  "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
                  "lambda_l2": 2.0, "seed": settings.seed, "deterministic": True,
                  "num_threads": 2, "verbose": -1}
    # out-of-fold document probabilities (stratified folds, fixed seed) choose the threshold
    rng = np.random.default_rng(settings.seed)
    folds = np.zeros(len(doc_y_arr), dtype=int)
    for value in (0.0, 1.0):
        members = rng.permutation(np.flatnonzero(doc_y_arr == value))
        folds[members] = np.arange(len(members)) % settings.doc_folds
    doc_oof = np.zeros(len(doc_y_arr))
    for fold in range(settings.doc_folds):
        train = folds != fold
        booster = lgb.train(doc_params, lgb.Dataset(doc_x_arr[train], doc_y_arr[train],
                                                    feature_name=DOC_FEATURES),
                            num_boost_round=settings.doc_rounds)
        doc_oof[~train] = booster.predict(doc_x_arr[~train])
    # the threshold is chosen on the documents that carry a human document label (where there
    # are any): pages judged good by their amount of labelled content are mostly easy, and a
    # threshold chosen on them would set the bar too high for real crawls
    real = np.asarray(labelled_docs, dtype=bool)
    judged = real if (real & (doc_y_arr > 0)).any() else np.ones_like(real)
    doc_threshold = _doc_threshold(doc_oof[judged], doc_y_arr[judged], settings.min_good_kept)
    doc_model = lgb.train(doc_params, lgb.Dataset(doc_x_arr, doc_y_arr, feature_name=DOC_FEATURES),
                          num_boost_round=settings.doc_rounds)
    bad = judged & (doc_y_arr == 0)
    bad_dropped = float((doc_oof[bad] < doc_threshold).mean()) if bad.any() else None
    good_kept = float((doc_oof[judged & (doc_y_arr > 0)] >= doc_threshold).mean())
    log(f"trained in {time.perf_counter() - started:.0f}s")
    log(f"doc model: {len(doc_y)} documents, threshold {doc_threshold:.3f} "
        f"(out of fold: {good_kept:.0%} good kept, "
        f"{bad_dropped if bad_dropped is not None else 0:.0%} bad dropped)")
    return {
        "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "name": name,
        "features_version": FEATURES_VERSION, "line_features": FEATURE_NAMES,
        "doc_features": DOC_FEATURES,
        "line_threshold": round(threshold, 4), "doc_threshold": round(doc_threshold, 6),
        "operating_points": {preset: {k: point[k] for k in ("sentence_threshold",
                                                            "short_threshold")}
                             for preset, point in points.items()},
        "preset": settings.preset,
        "kinds": [MAIN, LIST, *noise_kinds, MARKUP], "noise_kinds": noise_kinds,
        "typical_prior": round(typical_prior, 6),
        "training": {
            "sets": [{"name": s.name, "path": s.path, "documents": len(s.documents)}
                     for s in sets],
            "line_rows": int(len(data.labels)), "doc_rows": int(len(doc_y)),
            "out_of_fold_bad_dropped": bad_dropped,
            # each set's share as estimated by a share model that did not see it (with one
            # set: the model that did)
            "content_shares": content_shares,
            # per set, lines and content lines kept at every candidate threshold, sentences
            # and short lines apart, out of fold (none with one set); and what each preset's
            # thresholds do there
            "threshold_tradeoff": tradeoff,
            "operating_points": {preset: point["out_of_fold"]
                                 for preset, point in points.items()},
            # the tokenizer's name, not where this machine keeps it
            "settings": settings.__dict__,
            "tokenizer": Path(str(getattr(tokenizer, "name_or_path", ""))).name,
        },
        "share_features": SHARE_FEATURES,
        "line_model": line_model.model_to_string(),
        "doc_model": doc_model.model_to_string(),
        "share_model": share_model.model_to_string(),
        "kind_model": None if kind_model is None else kind_model.model_to_string(),
    }


def write_model(spec: dict, path) -> str:
    """Write the model file atomically; its sha256."""
    import hashlib

    text = json.dumps(spec, indent=None, sort_keys=True)
    write_text_atomic(text, path)
    return hashlib.sha256(text.encode()).hexdigest()
