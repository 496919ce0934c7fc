"""What a line of a web page is: the kinds the ``classifier`` refiner names, and the letters the
labelled sets use for them (``M`` main, ``C`` comment, ``B`` boilerplate, ``R`` related, ``S``
supplement; ``1``/``0`` for binary labels).

Main content splits by shape into ``main`` (sentences) and ``list``; markup is whatever
:func:`~prox_dagster.refiners.markup.is_markup` names. ``keep_kinds`` says what survives.
"""

from __future__ import annotations

MAIN, LIST, MARKUP = "main", "list", "markup"
NOISE = "noise"  # noise of no known kind: a model trained on binary labels only names no other
# the noise kinds the labelled sets name, by their letter
LETTER_KINDS = {"C": "comment", "B": "boilerplate", "R": "related", "S": "supplement"}
NOISE_KINDS = tuple(LETTER_KINDS.values())
KINDS = (MAIN, LIST, *NOISE_KINDS, MARKUP)
DEFAULT_KEEP_KINDS = (MAIN, LIST)
# every letter a labelled set may use: content, binary noise, not scored, and the kinds
KNOWN_LETTERS = frozenset("M10_") | frozenset(LETTER_KINDS)


def parse_keep_kinds(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """Kinds to keep from a comma-separated text or a sequence (empty: the default), sorted as
    :data:`KINDS` lists them; an unknown name is an error naming the known ones."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_KEEP_KINDS
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value)]
    names = [n for n in names if n]
    unknown = sorted(set(names) - set(KINDS) - {NOISE})
    if unknown:
        raise ValueError(f"keep_kinds names {', '.join(map(repr, unknown))}, which is no line "
                         f"kind; the kinds are {', '.join(KINDS)}")
    order = (*KINDS, NOISE)
    return tuple(sorted(set(names), key=order.index))
