"""Counting words in text of any script.

Kana, CJK ideographs and hangul are written without spaces between words (hangul with spaces
between phrases), so ``str.split`` sees a Chinese or Japanese paragraph as one or two "words".
Here each character of those scripts counts as a word: a Chinese article of 3,000 characters
is some 3,000 words, not 40. Korean counts high by this measure, which errs toward keeping it.
"""

from __future__ import annotations

import re
from typing import Literal

from .tokenization import PIECE_CHARS, pieces

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_CJK_RUNS = re.compile(CJK.pattern + "+")

WordUnit = Literal["cjk", "split"]
WORD_UNITS = ("cjk", "split")
# What ends a sentence, in three senses kept apart because shipped models and rules depend on
# each exactly: a sentence-like line; a link or menu item (the rules refiner's, Latin only);
# the classifier's `ends_punct` feature (FEATURES_VERSION fixes it; "»" ends titles there)
SENTENCE_END = (".", "!", "?", '"', "'", "”", "’", ":", ";", ")", "…", "。", "！", "？")
ITEM_END = SENTENCE_END[:11]
FEATURE_END = (".", "!", "?", "。", "！", "？", "…", '"', "”", "'", "’", ")", "»")


def word_count(text: str, unit: WordUnit) -> int:
    """Words of a text of any length: ``len(text.split())`` (``unit="split"``, the ProX
    reference's count), plus one per CJK character with ``unit="cjk"``; linear, and without the
    list of every word of a long text at once."""
    if len(text) <= PIECE_CHARS:
        total = len(text.split())
    else:
        total, previous = 0, " "
        for piece in pieces(text):
            total += len(piece.split())
            if piece and not previous[-1].isspace() and not piece[0].isspace():
                total -= 1  # a word the cut went through was counted in both pieces
            previous = piece or previous
    if unit == "cjk":
        total += sum(match.end() - match.start() for match in _CJK_RUNS.finditer(text))
    return total


def sentence_like(text: str, unit: WordUnit) -> bool:
    """At least 15 words, or at least 6 ending in punctuation (words counted in ``unit``): the
    naive line filter's rule (``"split"``), and what the rules refiner and the evaluation count
    as a sentence (``"cjk"``)."""
    words = word_count(text, unit)
    return words >= 15 or (words >= 6 and text.rstrip().endswith(SENTENCE_END))
