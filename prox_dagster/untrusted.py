"""Text from outside (a refiner's answer, a crawled page, a file name, a server's error body) on
its way to where a person or a later step reads it: every such string passes through one of
these functions first."""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")
# what starts Markdown or HTML inside a table cell (emphasis, code, links, images, tags,
# entities, cells) and what makes a bare URL a link: escaped, each shows as itself
_MARKDOWN = re.compile(r"[\\`*_\[\]<>|&~!#]|(?<=:)/|(?<=www)\.")
# what carries a credential in a header echo, a URL or a JSON body
_SECRETS = [
    re.compile(r"(?i)(authorization|proxy-authorization|x-api-key|api[-_]?key|access[-_]?token"
               r"|secret[-_]?access[-_]?key|password|token)(['\"]?\s*[:=]\s*['\"]?)"
               r"([^\s\"',;}&]+(?:\s+[^\s\"',;}&]+)?)"),
    re.compile(r"(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{6,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
]
REDACTED = "[redacted]"


def program_text(output: object) -> str:
    """A refiner's answer as a program every later step can store and parse: a lone surrogate
    (which no UTF-8 file can hold) becomes U+FFFD, anything but a string an empty program (a
    parse error: that document's fallback, never the shard's failure)."""
    if not isinstance(output, str):
        return ""
    return _SURROGATE.sub("\ufffd", output) if _SURROGATE.search(output) else output


def markdown_text(text: str, limit: int = 100) -> str:
    """``text`` as Markdown that shows it literally, on one line, cut to ``limit`` characters:
    a refiner's comment or a page cannot forge table rows, links or HTML in what an operator
    reads."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return _MARKDOWN.sub(r"\\\g<0>", text) or "(empty)"


def redact(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """``text`` (a server's error body, say) with every credential it may echo replaced:
    ``secrets`` (the API key in use) wherever they appear, and whatever looks like a key, a
    token or an ``Authorization`` value."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    text = _SECRETS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    for pattern in _SECRETS[1:]:
        text = pattern.sub(REDACTED, text)
    return text
