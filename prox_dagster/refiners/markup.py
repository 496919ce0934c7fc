"""Markup and code that leaked into a page's text: HTML tags, CSS rules, in-page JavaScript, JSON
blobs and template syntax that make up most of a line.

Only a web page's own idioms count (known HTML elements, CSS properties, the browser's objects,
ad and analytics snippets), so TeX and program code that are a page's content survive. Every
test is a regular expression without nested repetition over at most ``MAX_SCANNED_CHARS`` of the
line: linear, whatever the line.
"""

from __future__ import annotations

import re

MAX_SCANNED_CHARS = 4096

# element names of two letters or more, any case (old pages write `<TABLE BORDER=0>`); the
# one-letter ones only in lower case, since `Option<T>`, `Into<U>` and `Sum<A>` are type names
_ELEMENTS = (
    "(?i:abbr|area|article|aside|audio|blockquote|body|br|button|canvas|caption|center|cite|"
    "code|col|colgroup|dd|del|div|dl|dt|em|embed|fieldset|figcaption|figure|font|footer|form|"
    "h[1-6]|head|header|hr|html|iframe|img|input|ins|label|legend|li|link|meta|nav|noscript|"
    "object|ol|option|param|pre|script|section|select|small|span|strong|style|sub|sup|svg|"
    "table|tbody|td|textarea|tfoot|th|thead|title|tr|ul|video)|[abipsu]")
# attributes as HTML writes them (`border="0"`, `width=100%`, `async`): `<path to file(s)>`
# in a manual's command line is no tag
_ATTRIBUTES = (r"(?:\s+[\w:.-]{1,60}(?:\s*=\s*(?:\"[^\"<>]{0,1000}\"|'[^'<>]{0,1000}'|"
               r"[^\s\"'<>]{1,1000}))?){0,60}")
_TAG = re.compile(rf"</?(?:{_ELEMENTS}){_ATTRIBUTES}\s*/?>")
_CSS_PROPERTIES = (
    "align-items|background(?:-[a-z]+)?|border(?:-[a-z]+)*|bottom|clear|color|cursor|display|"
    "float|font(?:-[a-z]+)?|height|justify-content|left|line-height|list-style(?:-[a-z]+)?|"
    "margin(?:-[a-z]+)?|max-height|max-width|min-height|min-width|opacity|overflow(?:-[xy])?|"
    "padding(?:-[a-z]+)?|position|right|text-(?:align|decoration|indent|transform)|top|"
    "vertical-align|visibility|white-space|width|z-index")
# a selector and its first declaration on one line: `#dfh{margin:0`, `.nav li a { color: red`
_CSS_RULE = re.compile(rf"^[#.@]?[\w\-#.:>+~*\[\]=\"', ]{{0,300}}\{{\s*(?:{_CSS_PROPERTIES})\s*:",
                       re.IGNORECASE)
# one declaration alone on its line, as a style block leaves them: `  margin: 0 auto;`
_CSS_DECLARATION = re.compile(rf"^(?:{_CSS_PROPERTIES})\s*:\s*[^;{{}}]{{1,200}};\s*\}}?$",
                              re.IGNORECASE)
_SCRIPT = re.compile(
    r"\bdocument\.(?:write|getElement|querySelector|createElement|cookie|location)|"
    r"\bwindow\.(?:location|onload|addEventListener|open|dataLayer)|"
    r"\bgoogletag\.|\bdataLayer\.push|\b_gaq\.push|adsbygoogle|\bjQuery\s*\(|"
    r"\$\(\s*(?:document|window|['\"][#.])|\bfunction\s*\(\s*\)\s*\{|"
    r"\bvar\s+[\w$]+\s*=\s*[^;]{0,400};")
_TEMPLATE = re.compile(r"\{\{[^{}]{0,400}\}\}|\{%[^{}]{0,400}%\}|<\?php[^?]{0,400}(?:\?>)?|"
                       r"<%=?[^%]{0,400}%>")
_JSON = re.compile(r'^\{\s*"[\w$]{1,60}"\s*:\s*["\[{\d]')
# a dollar amount (`$5 and $6`) is no formula: a formula's first character is no digit
_TEX = re.compile(r"\\[a-zA-Z]{2,}|\$[^$\s\d][^$]{0,400}\$|\\[(\[]")
_BULLET = re.compile(r"^[\s•·*\-–—>|]*")
_CODE_PUNCTUATION = frozenset("{}();=<>[]")
_SUSPECT = re.compile(r"[<{;=]")
# an indented block is preformatted text (``<pre>``, kept by the extractor): a code example the
# page shows, not its own source leaking
_PREFORMATTED = ("    ", "\t")


def is_markup(line: str) -> bool:
    """Whether the line is markup or web-page code rather than text (see the module)."""
    if line.startswith(_PREFORMATTED):
        return False
    text = line[:MAX_SCANNED_CHARS]
    # tags, CSS, JSON and templates need one of these characters, and script without any of
    # them (`jQuery("#x").hide()`) is let go: most lines of text have none, and are done here
    if _SUSPECT.search(text) is None:
        return False
    text = _BULLET.sub("", text).rstrip()
    if len(text) < 3 or _TEX.search(text):
        return False
    if _JSON.match(text) or _CSS_RULE.match(text) or _CSS_DECLARATION.match(text):
        return True
    debris = [match.group(0) for pattern in (_TAG, _TEMPLATE) for match in pattern.finditer(text)]
    if debris:
        rest = text
        for piece in debris:
            rest = rest.replace(piece, " ")
        # mostly tags, or tags with hardly any text around them
        if sum(len(piece) for piece in debris) * 2 >= len(text.replace(" ", "")) \
                or len(rest.split()) < 3:
            return True
    if _SCRIPT.search(text):
        punctuation = sum(c in _CODE_PUNCTUATION for c in text)
        return punctuation >= 4 and punctuation * 25 >= len(text)
    return False


def has_tex(line: str) -> bool:
    """Whether the line holds TeX math (a command such as ``\\frac``, ``$...$``, ``\\(``)."""
    return _TEX.search(line[:MAX_SCANNED_CHARS]) is not None
