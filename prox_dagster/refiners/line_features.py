"""Features of every line of a chunk (or document), for the learned ``classifier`` refiner.

The line itself (length, punctuation, character shares, what the ``rules`` refiner says of it),
its context (its neighbours' signals, runs of short lines, prose blocks around it) and its
repetition (how many other documents of the shard hold it, from three on). Not its position nor
the blank lines around it, which taught the model one set's layout (measured leaving one set
out). Every feature is computed in one pass, linear in the chunk. Why each: ``docs/classifier.md``.
"""

from __future__ import annotations

import hashlib
import math
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

from ..words import CJK, FEATURE_END
from .markup import is_markup
from .signals import (NAV_WORDS, RulesConfig, line_reasons, repeated_ngram_share,
                      strip_bullet, top_ngram_share)

FEATURES_VERSION = "line-features-v4+doc-v3"

# rule reasons as category codes (0: no rule fires)
REASONS = ("url", "navigation", "cookie", "copyright", "legal", "share", "comment_widget",
           "link_list", "repeated", "outside_body")
_REASON_CODE = {name: i + 1 for i, name in enumerate(REASONS)}

_SEPARATOR_CHARS = re.compile(r"[|»›•·/>]")
_URLISH = re.compile(r"https?://|www\.|\.(com|org|net|html?)\b|@\w+\.\w", re.I)
_DATEISH = re.compile(r"\b(19|20)\d\d\b|\b\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}\b")
_STOP = frozenset("the be to of and a in that have i it for not on with he as you do at this "
                  "but his by from they we say her she or an will my one all would there their "
                  "is are was were".split())
_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")
_DIGITS_TO_ZERO = str.maketrans("123456789", "000000000")
MIN_REPEAT_DOCS = 3

LINE_FEATURES = [
    "log_words", "log_chars", "ends_punct", "ends_colon", "alpha_share", "digit_share",
    "upper_share", "capitalized_words", "symbol_share", "bullet", "separators", "urlish",
    "dateish", "cjk_share", "stop_share", "mean_word_len", "nav_word", "rule_reason",
    "long_sentence", "shard_doc_share", "log_shard_docs", "doc_repeats", "markup",
]
CONTEXT_FEATURES = [
    "prev1_log_words", "prev1_ends_punct", "prev2_log_words", "next1_log_words",
    "next1_ends_punct", "next2_log_words", "prev1_rule", "next1_rule",
    "win3_log_words", "win3_long", "win10_log_words", "win10_long", "win3_rule",
    "win10_shard_share",
    "dist_long_before", "dist_long_after", "short_run", "inside_long_span",
    "chunk_long_share", "words_vs_max",
    "in_block", "block_log_words", "block_vs_largest", "block_rank", "dist_largest_block",
    "side_of_largest_block",
]
FEATURE_NAMES = LINE_FEATURES + CONTEXT_FEATURES


def line_key(line: str) -> str:
    """What counts as "the same line" across documents: case, spacing and digits ignored
    (``Posted on 3 May 2021`` and ``Posted on 9 May 2022`` are the same line)."""
    return " ".join(line.split()).lower().translate(_DIGITS_TO_ZERO)


class ShardLineCounts:
    """How many distinct documents of a shard hold each line (by :func:`line_key`): a document
    with the same set of lines as one counted before is not counted again.

    Kept as sorted 64-bit hashes of the keys with their counts: 8 bytes per distinct line of
    each document while counting, 16 per distinct line of the shard after (a Counter of the
    strings held the shard's text again, several times over). ``documents`` may be a stream."""

    def __init__(self, documents: Iterable[Iterable[str]] = ()):
        seen = array("Q")
        copies: set[bytes] = set()
        self.n_docs = 0
        for lines in documents:
            self.n_docs += 1
            hashes = sorted({_key_hash(line_key(line)) for line in lines if line.strip()})
            # a copy of a page already counted (the same lines) is the same page crawled again,
            # not another page of a site sharing its template: counting it would make every line
            # of a page crawled three times look like chrome
            digest = hashlib.blake2b(array("Q", hashes).tobytes(), digest_size=16).digest()
            if digest not in copies:
                copies.add(digest)
                seen.extend(hashes)
        self.keys, self.counts = np.unique(np.frombuffer(seen, dtype=np.uint64),
                                           return_counts=True)

    def others(self, keys: Sequence[str]) -> np.ndarray:
        """Per key: documents other than the line's own that hold it, when at least
        :data:`MIN_REPEAT_DOCS` documents do (else 0: see the module's docstring)."""
        if not len(self.keys) or not len(keys):
            return np.zeros(len(keys), dtype=np.int64)
        hashes = np.fromiter((_key_hash(key) for key in keys), dtype=np.uint64, count=len(keys))
        at = np.minimum(np.searchsorted(self.keys, hashes), len(self.keys) - 1)
        counts = np.where(self.keys[at] == hashes, self.counts[at], 1)
        return np.where(counts >= MIN_REPEAT_DOCS, counts - 1, 0)


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little")


def _units(text: str) -> tuple[int, int]:
    """(words, CJK characters): a CJK character counts as a word (no spaces between them)."""
    cjk = len(CJK.findall(text))
    return len(text.split()) + cjk, cjk


def _line_row(line: str, key: str, reason: str | None, others: int, n_docs: int,
              doc_counts: Counter) -> list[float]:
    text = line.strip()
    n_chars = len(text)
    words = text.split()
    units, cjk = _units(text)
    letters = len(_LETTER.findall(text))
    digits = len(_DIGIT.findall(text))
    upper = sum(map(str.isupper, text))
    spaces = n_chars - len("".join(words))
    symbols = n_chars - letters - digits - spaces
    ends_punct = text.endswith(FEATURE_END)
    stripped = strip_bullet(text)
    lowered_words = [w.lower().strip(".,;:!?\"'()") for w in words]
    return [
        math.log1p(units),
        math.log1p(n_chars),
        float(ends_punct),
        float(text.endswith((":", "："))),
        letters / n_chars,
        digits / n_chars,
        upper / max(letters, 1),
        sum(map(str.isupper, [w[0] for w in words])) / max(len(words), 1),
        symbols / n_chars,
        float(stripped != text),
        float(len(_SEPARATOR_CHARS.findall(text))),
        float(bool(_URLISH.search(text))),
        float(bool(_DATEISH.search(text))),
        cjk / n_chars,
        sum(map(_STOP.__contains__, lowered_words)) / max(len(words), 1),
        (n_chars - spaces) / max(len(words), 1),
        float(stripped.lower().strip(" :.!|") in NAV_WORDS),
        float(_REASON_CODE.get(reason, 0) if reason else 0),
        float(units >= 15 or (units >= 6 and ends_punct)),
        others / max(n_docs - 1, 1),
        math.log1p(others),
        float(doc_counts[key] - 1),
        float(is_markup(line)),
    ]


def _block_features(long_pos: np.ndarray, words: np.ndarray, n: int,
                    max_gap: int = 3) -> np.ndarray:
    """Prose blocks: runs of sentence-like lines with at most ``max_gap - 1`` other lines
    between two of them. The main text is usually the largest block; comments and promos are
    smaller blocks apart from it. Per line: whether it lies in a block, that block's words, its
    share of the largest block's, its rank by size, the distance to the largest block and on
    which side of it the line is."""
    out = np.zeros((n, 6))
    out[:, 3] = 99.0
    out[:, 4] = 99.0
    if not long_pos.size:
        return out
    breaks = np.flatnonzero(np.diff(long_pos) > max_gap)
    starts = np.concatenate([[long_pos[0]], long_pos[breaks + 1]])
    ends = np.concatenate([long_pos[breaks], [long_pos[-1]]])
    sums = np.concatenate([[0.0], np.cumsum(words)])
    block_words = sums[ends + 1] - sums[starts]
    order = np.argsort(-block_words, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    largest = order[0]
    positions = np.arange(n)
    block_of = np.searchsorted(starts, positions, side="right") - 1
    inside = (block_of >= 0) & (positions <= ends[np.maximum(block_of, 0)])
    out[:, 0] = inside
    safe = np.maximum(block_of, 0)
    out[:, 1] = np.where(inside, np.log1p(block_words[safe]), 0.0)
    out[:, 2] = np.where(inside, block_words[safe] / max(block_words[largest], 1.0), 0.0)
    out[:, 3] = np.where(inside, np.minimum(rank[safe], 99), 99.0)
    lo, hi = starts[largest], ends[largest]
    out[:, 4] = np.minimum(np.where(positions < lo, lo - positions,
                                    np.where(positions > hi, positions - hi, 0)), 99)
    out[:, 5] = np.sign(positions - lo) * (positions > hi) + -1.0 * (positions < lo)
    return out


def chunk_features(lines: Sequence[str], shard: ShardLineCounts | None = None,
                   config: RulesConfig = RulesConfig()) -> tuple[np.ndarray, list[int]]:
    """Features of the non-blank lines of one chunk: ``(matrix, indices)``, one matrix row per
    non-blank line, ``indices`` the lines' positions in ``lines``."""
    reasons = line_reasons(list(lines), config)
    indices = [i for i, line in enumerate(lines) if line.strip()]
    if not indices:
        return np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32), []
    keys = [line_key(lines[i]) for i in indices]
    doc_counts = Counter(keys)
    others = shard.others(keys).tolist() if shard is not None else [0] * len(keys)
    n_docs = shard.n_docs if shard is not None else 1
    base = np.array([_line_row(lines[i], key, reasons[i], other, n_docs, doc_counts)
                     for i, key, other in zip(indices, keys, others)], dtype=np.float64)
    n = len(indices)
    col = {name: j for j, name in enumerate(LINE_FEATURES)}
    log_words = base[:, col["log_words"]]
    ends = base[:, col["ends_punct"]]
    long = base[:, col["long_sentence"]]
    rule = (base[:, col["rule_reason"]] > 0).astype(np.float64)
    shard_share = base[:, col["shard_doc_share"]]
    words = np.expm1(log_words)

    def shifted(values: np.ndarray, k: int, fill: float) -> np.ndarray:
        out = np.full(n, fill)
        if k > 0 and k < n:
            out[k:] = values[:-k]
        elif k < 0 and -k < n:
            out[:k] = values[-k:]
        return out

    def window_mean(values: np.ndarray, half: int) -> np.ndarray:
        sums = np.concatenate([[0.0], np.cumsum(values)])
        lo = np.clip(np.arange(n) - half, 0, n)
        hi = np.clip(np.arange(n) + half + 1, 0, n)
        return (sums[hi] - sums[lo]) / (hi - lo)

    positions = np.arange(n)
    long_pos = positions[long > 0]
    if long_pos.size:
        after_idx = np.searchsorted(long_pos, positions, side="left")
        after = np.where(after_idx < long_pos.size,
                         long_pos[np.minimum(after_idx, long_pos.size - 1)] - positions, 99)
        before_idx = np.searchsorted(long_pos, positions, side="right") - 1
        before = np.where(before_idx >= 0, positions - long_pos[np.maximum(before_idx, 0)], 99)
        inside = ((positions >= long_pos[0]) & (positions <= long_pos[-1])).astype(np.float64)
    else:
        after = before = np.full(n, 99)
        inside = np.zeros(n)
    # length of the run of consecutive short lines (fewer than 6 words) holding each line
    short = log_words < math.log1p(6)
    run = np.zeros(n)
    start = 0
    while start < n:
        end = start
        while end < n and short[end] == short[start]:
            end += 1
        run[start:end] = (end - start) if short[start] else 0
        start = end
    blocks = _block_features(long_pos, words, n)
    context = np.column_stack([
        shifted(log_words, 1, 0.0), shifted(ends, 1, 0.0), shifted(log_words, 2, 0.0),
        shifted(log_words, -1, 0.0), shifted(ends, -1, 0.0), shifted(log_words, -2, 0.0),
        shifted(rule, 1, 0.0), shifted(rule, -1, 0.0),
        window_mean(log_words, 3), window_mean(long, 3), window_mean(log_words, 10),
        window_mean(long, 10), window_mean(rule, 3), window_mean(shard_share, 10),
        np.minimum(before, 99), np.minimum(after, 99), np.minimum(run, 200), inside,
        np.full(n, long.mean()), words / max(words.max(), 1.0),
        blocks,
    ])
    return np.hstack([base, context]).astype(np.float32), indices


DOC_FEATURES = [
    "log_lines", "log_words", "mean_p", "content_word_share", "log_content_words",
    "max_block_words", "top_p_mean", "content_mean_word_len", "content_stop_share",
    "content_alpha_share", "content_punct_words", "content_dup_lines", "content_top2gram",
    "content_dup5gram", "content_symbols", "content_bullet_words", "content_ellipsis_words",
    "content_short_words", "raw_short_words", "raw_punct_words", "type_token_ratio",
    "digit_share", "cjk_share", "shard_repeat_words", "long_words",
]


def document_features(lines: Sequence[str], indices: Sequence[int], probabilities: np.ndarray,
                      matrix: np.ndarray, threshold: float) -> list[float]:
    """Features of a whole document for the keep/drop decision, from its lines' content
    probabilities (the line model's) and Gopher/FineWeb-style statistics of its likely content.

    Shares of lines are weighted by the lines' words: a one-line menu above a long article is a
    small part of the page, not half of a two-line document."""
    n = len(indices)
    if n == 0:
        return [0.0] * len(DOC_FEATURES)
    col = {name: j for j, name in enumerate(FEATURE_NAMES)}
    words = np.expm1(matrix[:, col["log_words"]].astype(np.float64))
    total_words = max(words.sum(), 1.0)
    content = probabilities >= threshold
    content_words_n = max(float((words * content).sum()), 1.0)
    raw_lines = [lines[i].strip() for i in indices]
    content_lines = [line for line, c in zip(raw_lines, content) if c]
    content_words = _words(content_lines)

    def share(flags, of_content: bool = False) -> float:
        flags = np.asarray(flags, dtype=np.float64)
        if of_content:
            return float((words * content * flags).sum() / content_words_n)
        return float((words * flags).sum() / total_words)

    # the largest block of consecutive likely-content lines, in words
    block = best = 0.0
    for w, c in zip(words, content):
        block = block + w if c else 0.0
        best = max(best, block)
    top_p = np.sort(probabilities)[-max(1, n // 5):]
    all_words = [w.lower() for line in raw_lines for w in line.split()]
    n_cw = len(content_words) or 1
    dup_lines = sum(c for c in Counter(content_lines).values() if c > 1)
    short = [len(line) <= 30 for line in raw_lines]
    punct = [line.endswith(FEATURE_END) for line in raw_lines]
    return [
        math.log1p(n), math.log1p(total_words), share(probabilities),
        share(content), math.log1p(float((words * content).sum())), math.log1p(best),
        float(top_p.mean()),
        sum(len(w) for w in content_words) / n_cw,
        sum(w in _STOP for w in content_words) / n_cw,
        sum(any(ch.isalpha() for ch in w) for w in content_words) / n_cw,
        share(punct, True), dup_lines / max(len(content_lines), 1),
        top_ngram_share(content_words, 2), repeated_ngram_share(content_words, 5),
        sum(line.count("#") + line.count("...") + line.count("…") for line in content_lines)
        / n_cw,
        share([strip_bullet(line) != line for line in raw_lines], True),
        share([line.endswith(("...", "…")) for line in raw_lines], True),
        share(short, True), share(short), share(punct),
        len(set(all_words)) / max(len(all_words), 1),
        share(matrix[:, col["digit_share"]]), share(matrix[:, col["cjk_share"]]),
        share(matrix[:, col["shard_doc_share"]] > 0), share(matrix[:, col["long_sentence"]]),
    ]


def repeated_share(lines: Sequence[str], indices: Sequence[int], probabilities: np.ndarray,
                   threshold: float) -> float:
    """The share of the lines at ``threshold`` or above (by word characters) in passages
    repeated word for word: duplicated 5-grams, Gopher's repetition measure."""
    return repeated_ngram_share(_words(
        lines[i].strip() for i, p in zip(indices, probabilities) if p >= threshold), 5)


def _words(lines: Iterable[str]) -> list[str]:
    return [w.lower().strip(".,;:!?\"'()") for line in lines for w in line.split()]
