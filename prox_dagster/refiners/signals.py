"""Rule-based quality signals: which lines are boilerplate, which documents are junk.

Line rules flag navigation, cookie banners, share rows, legal footers, comment chrome, bare URLs,
repeated short lines, runs of non-sentences and the header and footer. Document rules follow
Gopher, C4 and FineWeb, judged on the document's body (the sentence-like lines the line rules
keep), counting CJK characters as words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from ..words import CJK, ITEM_END, SENTENCE_END, sentence_like

NAV_WORDS = {
    "home", "about", "about us", "contact", "contact us", "blog", "news", "login", "log in",
    "logout", "log out", "sign in", "sign up", "register", "search", "menu", "subscribe",
    "newsletter", "next", "previous", "prev", "next post", "previous post", "older posts",
    "newer posts", "read more", "continue reading", "back to top", "top", "reply", "share",
    "tweet", "email", "print", "facebook", "twitter", "linkedin", "pinterest", "reddit",
    "whatsapp", "instagram", "youtube", "rss", "sitemap", "faq", "help", "careers", "shop",
    "cart", "checkout", "my account", "account", "categories", "tags", "archives", "recent posts",
    "related posts", "popular posts", "comments", "leave a comment", "leave a reply",
    "skip to content", "skip to main content", "toggle navigation", "main menu", "close",
    "accept", "accept all", "decline", "ok", "got it", "more", "follow us", "share this",
    "share this:", "like this:", "like", "loading...", "advertisement", "sponsored", "privacy",
    "terms", "docs", "tutorials", "reference", "resources", "products", "services", "pricing",
    "support", "community", "forum", "forums", "events", "downloads", "download",
}
# the separator alone: with the spaces around it in the pattern (\s*sep\s*) a long run of
# spaces costs O(n²), since every start position in it scans the run again
_SEPARATORS = re.compile(r"\||»|›|>|•|·|/|::|–")
# "cookie" followed, anywhere later in the line, by one of these words: two linear searches
_COOKIE_WORD = re.compile(r"\bcookies?\b", re.I)
_COOKIE_TAIL = re.compile(r"\b(use|accept|consent|policy|settings|experience|agree|continu\w*|"
                          r"browsing|personali[sz]e)\b", re.I)
_CONSENT = re.compile(r"\b(we value your privacy|gdpr|consent preferences|manage preferences)\b",
                      re.I)
_SHARE = re.compile(r"^(share|tweet|pin it|email this|share on \w+|share via \w+|"
                    r"click to share|follow us on)\b", re.I)
_COPYRIGHT = re.compile(r"(©|\(c\)\s*\d{4}|\bcopyright\b|\ball rights reserved\b)", re.I)
_LEGAL = re.compile(r"\b(privacy policy|terms (of|and) (use|service|conditions)|cookie policy|"
                    r"terms & conditions|disclaimer|imprint|powered by)\b", re.I)
_COMMENT_CHROME = re.compile(
    r"^(\d+\s+(comments?|responses?|replies)|leave a (reply|comment)|post comment|"
    r"(your )?email address will not be published|required fields are marked|"
    r"you must be (logged|signed) in|log in to (reply|comment)|cancel reply|"
    r"(posted|published|written) (by|on)\b|by\s+[\w .'-]{1,40}?\s+(on|\|)\s|"
    r"[\w .'-]{1,40} says:?$|notify me of|save my name, email)", re.I)
_LIST_HEAD = re.compile(r"^(related( posts| articles| stories)?|you (may|might) also like|"
                        r"popular( posts)?|recent posts|read (next|more)|more from \w+|"
                        r"see also|trending( now)?|most read|further reading)\s*:?$", re.I)
_URL = re.compile(r"^(https?://|www\.)\S+$", re.I)
_WORD = re.compile(r"\w+", re.UNICODE)
# Gopher's English stop words, plus the commonest function words of other languages written
# with spaces (de, fr, es, it, pt, nl, sv/da/no, pl, cs, ru, tr, id), so the rule does not drop
# every non-English page
STOP_WORDS = frozenset(
    "the be to of and that have with "
    "der die das und ist nicht ein eine zu den mit sich des auf für "
    "le la les et est un une des du pas que qui pour dans sur "
    "el los las y es en por con una del se no lo al "
    "il di che è per non gli della sono "
    "o os as um uma não para com do da em "
    "de het een en van is dat niet op te "
    "och att är det som på för inte med af ikke og til er "
    "i w z na się nie to jest że do "
    "je se na to že v a "
    "и в не на что с по это как он "
    "bir ve bu için da ile "
    "yang dan di ini itu dengan untuk".split())
_BULLETS = ("•", "-", "*", "·", "‣", "●", "▪")
_BULLET_PREFIX = re.compile(r"^(?:[•*·‣●▪◦■□►▸>»›–—-]|\d{1,3}[.)])\s*")


def strip_bullet(text: str) -> str:
    """``text`` without a leading list bullet (``  • Home`` -> ``Home``)."""
    return _BULLET_PREFIX.sub("", text.strip(), count=1)


@dataclass(frozen=True)
class RulesConfig:
    """Every threshold of the rules refiner (part of its version fingerprint)."""

    # line rules
    max_nav_words: int = 4
    min_nav_items: int = 3
    max_boilerplate_words: int = 14
    max_link_words: int = 8
    min_run_lines: int = 3
    max_repeat_words: int = 10
    # document rules (Gopher)
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_line_ratio: float = 0.9
    max_ellipsis_line_ratio: float = 0.3
    min_alpha_word_ratio: float = 0.8
    min_stop_words: int = 2
    max_top_2gram_char_ratio: float = 0.2
    max_top_3gram_char_ratio: float = 0.18
    max_top_4gram_char_ratio: float = 0.16
    # Gopher's 0.15 dropped forum threads (quotes repeat) and articles with repeated teasers
    # on labelled pages while catching one bad page of dclm-human-quality: only heavy repetition
    max_dup_5gram_char_ratio: float = 0.5
    # FineWeb
    min_punct_line_ratio: float = 0.12
    max_short_line_ratio: float = 0.67
    short_line_chars: int = 30
    # C4
    drop_lorem_ipsum: bool = True


def _is_cookie(text: str) -> bool:
    match = _COOKIE_WORD.search(text)
    return match is not None and _COOKIE_TAIL.search(text, match.end()) is not None


def line_reason(line: str, config: RulesConfig = RulesConfig()) -> str | None:
    """Why a single line is boilerplate (``None``: it is not)."""
    text = line.strip()
    if not text:
        return None
    lowered = strip_bullet(text).lower().strip(" :.!|")
    words = text.split()
    n = len(words)
    if _URL.match(text):
        return "url"
    if lowered in NAV_WORDS:
        return "navigation"
    items = [p for p in (piece.strip() for piece in _SEPARATORS.split(text)) if p]
    if (len(items) >= config.min_nav_items and n <= 6 * len(items)
            and all(len(p.split()) <= config.max_nav_words for p in items)
            and not text.endswith((".", "?", "!"))):
        return "navigation"
    if n <= config.max_boilerplate_words * 3 and (_is_cookie(text) or _CONSENT.search(text)):
        return "cookie"
    if n <= config.max_boilerplate_words and _COPYRIGHT.search(text):
        return "copyright"
    if n <= config.max_boilerplate_words and _LEGAL.search(text):
        return "legal"
    if n <= config.max_boilerplate_words and _SHARE.match(text):
        return "share"
    if n <= config.max_boilerplate_words and _COMMENT_CHROME.match(text):
        return "comment_widget"
    return None


def line_reasons(lines: list[str], config: RulesConfig = RulesConfig()) -> list[str | None]:
    """Reasons for every line, with the rules that need context: the short, unpunctuated link
    titles under a "Related posts" style heading count as ``link_list``; later copies of a short
    repeated line count as ``repeated``."""
    reasons = [line_reason(line, config) for line in lines]
    in_list = False
    for i, line in enumerate(lines):
        text = line.strip()
        if _LIST_HEAD.match(text):
            reasons[i] = "link_list"
            in_list = True
        elif in_list and text and reasons[i] is None:
            if len(text.split()) <= config.max_link_words and not text.endswith(ITEM_END):
                reasons[i] = "link_list"
            else:
                in_list = False
        elif not text:
            in_list = False
    _mark_runs(lines, reasons, config)
    _mark_outside_body(lines, reasons)
    seen: set[str] = set()
    for i, line in enumerate(lines):
        key = " ".join(line.split()).lower()
        if not key:
            continue
        if reasons[i] is None and key in seen and len(key.split()) <= config.max_repeat_words:
            reasons[i] = "repeated"
        seen.add(key)
    return reasons


def _mark_runs(lines: list[str], reasons: list[str | None], config: RulesConfig) -> None:
    """Runs of at least ``min_run_lines`` consecutive unpunctuated short lines are menus (each at
    most ``max_nav_words`` words: one item per line) or teaser / headline lists (at most
    ``max_boilerplate_words``). Blank lines do not break a run; a sentence does. An article's
    section heading stands alone between paragraphs, so it is never such a run, and the last line
    of a run right before a sentence (or its byline) is the title of that text: it stays."""
    def run_kind(text: str) -> str | None:
        if is_prose(text):
            return None
        n = len(strip_bullet(text).split())
        if n <= config.max_nav_words and not text.endswith(ITEM_END):
            return "navigation"
        return "link_list"

    run: list[int] = []
    for i in range(len(lines) + 1):
        text = lines[i].strip() if i < len(lines) else ""
        if not text and i < len(lines):
            continue
        kind = run_kind(text) if text else None
        if kind is not None and (reasons[i] is None or reasons[i] in ("navigation", "link_list")):
            run.append(i)
            continue
        if len(run) >= config.min_run_lines:
            all_short = all(run_kind(lines[j].strip()) == "navigation" for j in run)
            if text and (is_prose(text) or reasons[i] == "comment_widget"):  # text or byline
                run.pop()
            for j in run:
                if reasons[j] is None:
                    reasons[j] = "navigation" if all_short else "link_list"
        run = []


def _mark_outside_body(lines: list[str], reasons: list[str | None]) -> None:
    """Lines that are not sentences, above the first sentence of the text (but its title, the
    nearest line above it that no rule flags) or below the last one, are the page's header and
    footer."""
    prose = [i for i, line in enumerate(lines) if reasons[i] is None and is_prose(line)]
    if not prose:
        return
    title = max((i for i in range(prose[0]) if lines[i].strip() and reasons[i] is None),
                default=-1)
    for i in [*range(prose[0]), *range(prose[-1] + 1, len(lines))]:
        if reasons[i] is None and i != title and lines[i].strip():
            reasons[i] = "outside_body"


def boilerplate_ranges(reasons: list[str | None], offset: int = 0,
                       blank: list[bool] | None = None) -> list[tuple[int, int]]:
    """Inclusive line ranges of consecutive boilerplate lines (blank lines bridge a run)."""
    ranges: list[tuple[int, int]] = []
    start = None
    last = None
    for i, reason in enumerate(reasons):
        if reason is not None:
            if start is None:
                start = i
            last = i
        elif blank is not None and blank[i] and start is not None:
            continue
        elif start is not None:
            ranges.append((start + offset, last + offset))
            start = None
    if start is not None:
        ranges.append((start + offset, last + offset))
    return ranges


_MOJIBAKE = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]+")


def _unmojibake(s: str) -> str | None:
    data = bytearray()
    for ch in s:
        try:
            data += ch.encode("cp1252")
        except UnicodeEncodeError:
            if ord(ch) > 255:
                return None
            data.append(ord(ch))  # bytes cp1252 leaves undefined come through as C1 controls
    try:
        fixed = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return fixed if fixed != s else None


def mojibake_fixes(text: str) -> dict[str, str]:
    """UTF-8-read-as-cp1252 sequences in ``text`` and their repairs (``"â€™"`` -> ``"’"``)."""
    fixes: dict[str, str] = {}
    for match in _MOJIBAKE.finditer(text):
        bad = match.group(0)
        if bad not in fixes:
            fixed = _unmojibake(bad)
            if fixed is not None:
                fixes[bad] = fixed
    return fixes


def top_ngram_share(words: Sequence[str], n: int) -> float:
    """Word characters of the most frequent n-gram (all its occurrences, when it recurs) over
    all word characters: Gopher's top n-gram measure."""
    total = sum(len(w) for w in words)
    if len(words) < n or total == 0:
        return 0.0
    top, count = Counter(zip(*(words[i:] for i in range(n)))).most_common(1)[0]
    return sum(len(w) for w in top) * count / total if count > 1 else 0.0


def repeated_ngram_share(words: Sequence[str], n: int) -> float:
    """:func:`repeated_ngram_chars` over all word characters."""
    total = sum(len(w) for w in words)
    return repeated_ngram_chars(words, n) / total if total else 0.0


def repeated_ngram_chars(words: Sequence[str], n: int) -> int:
    """Word characters in n-grams that repeat an earlier n-gram of ``words``: Gopher's duplicate
    n-gram measure as its reference implementation (datatrove) counts it. The first occurrence
    does not count, and a repeat is skipped whole, so a passage that appears twice is half
    repeated, not all of it (a forum post and its quote are not a spam page)."""
    seen: set[tuple[str, ...]] = set()
    repeated = i = 0
    while i <= len(words) - n:
        gram = tuple(words[i:i + n])
        if gram in seen:
            repeated += sum(len(w) for w in gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


def is_prose(line: str) -> bool:
    """A sentence-like line: at least 15 words, or at least 6 ending in punctuation."""
    if line.rstrip().endswith(("...", "…")):  # a truncated teaser, not a sentence
        return False
    return sentence_like(line, "cjk")


def document_reason(text: str, reasons: list[str | None] | None = None,
                    config: RulesConfig = RulesConfig()) -> str | None:
    """Why a document should be dropped (``None``: keep it).

    The quality rules judge the document's *body*: the prose lines among those the line rules
    keep. A page's menus, teaser lists and footers are short unpunctuated lines; judged with
    them, a good article fails the short-line, punctuation and repetition rules because of its
    chrome. Word rules count a CJK character as a word, and the stop-word rule knows the common
    function words of several languages, so a page is not dropped for not being English.
    """
    lines = text.split("\n")
    if reasons is None:
        reasons = line_reasons(lines, config)
    content = [line.strip() for line, r in zip(lines, reasons) if r is None and line.strip()]
    body_lines = [line for line in content if is_prose(line)]
    body = "\n".join(body_lines)
    words = body.split()
    units = len(words) + len(CJK.findall(body))
    if units < config.min_words:
        return "gopher_too_few_words"
    if units > config.max_words:
        return "gopher_too_many_words"
    cjk = len(CJK.findall(body)) / max(len(body), 1) > 0.2
    n = max(len(words), 1)
    if not cjk:
        mean_len = sum(len(w) for w in words) / n
        if not config.min_mean_word_length <= mean_len <= config.max_mean_word_length:
            return "gopher_mean_word_length"
    symbols = body.count("#") + body.count("...") + body.count("…")
    if symbols / max(units, 1) > config.max_symbol_word_ratio:
        return "gopher_symbol_ratio"
    if sum(line.startswith(_BULLETS) for line in content) / len(content) > \
            config.max_bullet_line_ratio:
        return "gopher_bullet_lines"
    if sum(line.endswith(("...", "…")) for line in content) / len(content) > \
            config.max_ellipsis_line_ratio:
        return "gopher_ellipsis_lines"
    if not cjk and sum(1 for w in words if any(c.isalpha() for c in w)) / n < \
            config.min_alpha_word_ratio:
        return "gopher_alpha_words"
    lowered = [w.lower().strip(".,;:!?\"'()") for w in words]
    if not cjk and sum(1 for w in lowered if w in STOP_WORDS) < config.min_stop_words:
        return "gopher_stop_words"
    if config.drop_lorem_ipsum and "lorem ipsum" in body.lower():
        return "c4_lorem_ipsum"
    # Gopher's duplicate-line rules are not used: on labelled pages they dropped forum threads
    # and articles for their quoted replies and repeated teasers, and caught no bad page of
    # dclm-human-quality. A page that is one passage repeated has too few distinct words; the
    # n-gram rules judge the distinct body lines.
    distinct = list(dict.fromkeys(body_lines))
    if len(distinct) < len(body_lines):
        body = "\n".join(distinct)
        lowered = [w.lower().strip(".,;:!?\"'()") for w in body.split()]
        if len(lowered) + len(CJK.findall(body)) < config.min_words:
            return "gopher_too_few_words"
    for n_gram, limit in ((2, config.max_top_2gram_char_ratio),
                          (3, config.max_top_3gram_char_ratio),
                          (4, config.max_top_4gram_char_ratio)):
        if top_ngram_share(lowered, n_gram) > limit:
            return f"gopher_top_{n_gram}gram"
    if repeated_ngram_share(lowered, 5) > config.max_dup_5gram_char_ratio:
        return "gopher_dup_5gram"
    # FineWeb's line rules, on the lines the line rules keep: a page that is mostly short lines
    # even after its menus went is a listing, not an article
    if sum(line.endswith(SENTENCE_END) for line in content) / len(content) < \
            config.min_punct_line_ratio:
        return "fineweb_line_punct"
    # a CJK character carries about a word: 30 characters is a long CJK line
    short = config.short_line_chars // 3 if cjk else config.short_line_chars
    if sum(len(line) <= short for line in content) / len(content) > config.max_short_line_ratio:
        return "fineweb_short_lines"
    return None
