"""The ProX program language: function set, parser and validation.

A refiner's output is untrusted text: :func:`parse_program` turns it into validated calls and
errors and never raises. Nothing is evaluated: call spans are found by a small scanner, each is
parsed with ``ast.parse(mode="eval")`` and accepted only as a whitelisted call with literal
arguments. Two dialects: ``prox`` (``drop_doc``, ``keep_doc``, ``remove_lines``, ``normalize``,
``keep_chunk``) and ``refinex`` (``remove_lines``, ``remove_str``, ``keep_all``). What is accepted
and rejected, and the cost bounds: ``docs/programs.md``.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

MAX_PROGRAM_CHARS = 64_000
MAX_CALLS = 512
MAX_LINE_NUMBER = 1_000_000

# dialect -> name -> (level, ordered parameters, defaults)
_DOC_FUNCTIONS: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    "drop_doc": ("doc", (), {}),
    "keep_doc": ("doc", (), {}),
}
DIALECTS: dict[str, dict[str, tuple[str, tuple[str, ...], dict[str, Any]]]] = {
    "prox": {
        **_DOC_FUNCTIONS,
        "remove_lines": ("chunk", ("line_start", "line_end"), {}),
        "normalize": ("chunk", ("source_str", "target_str"), {"target_str": ""}),
        "keep_chunk": ("chunk", (), {}),
    },
    "refinex": {
        **_DOC_FUNCTIONS,
        "remove_lines": ("chunk", ("start_line", "end_line"), {}),
        "remove_str": ("chunk", ("line", "del_str"), {}),
        "keep_all": ("chunk", (), {}),
    },
}
ALIASES = {"untouch_doc": "keep_doc", "skip_chunk": "keep_chunk"}
LEVELS = ("doc", "chunk")
_LINE_ARGS = {"line_start", "line_end", "start_line", "end_line", "line"}

# Canonical one-call lines: keyword or positional arguments; integers as Python writes them
# (ASCII digits, no leading zero: `\d` would take Arabic-Indic digits, which ast rejects);
# double-quoted strings whose only escapes are \" \\ \' \n \t (decoded exactly by _unescape).
_FAST_STRING = r"(\"(?:[^\"\\\n]|\\[\"\\'nt])*\")"
_FAST_CALL = re.compile(
    r"[ \t]*([a-z_]+)\((?:"
    r"|(?:([a-z_]+)=)?(0|[1-9][0-9]{0,6}), (?:([a-z_]+)=)?(0|[1-9][0-9]{0,6})"
    rf"|(?:([a-z_]+)=)?{_FAST_STRING}(?:, (?:([a-z_]+)=)?{_FAST_STRING})?"
    r")\)[ \t]*")
_ESCAPE = re.compile(r"\\(.)")
_ESCAPED = {"n": "\n", "t": "\t"}


def _unescape(literal: str) -> str:
    body = literal[1:-1]
    if "\\" not in body:
        return body
    return _ESCAPE.sub(lambda m: _ESCAPED.get(m.group(1), m.group(1)), body)

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_+-]*\s*$", re.MULTILINE)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much
class Call:
    """One validated call. ``name`` is canonical (aliases resolved); ``args`` are all named."""

    name: str
    args: dict[str, Any]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class ProgramError:
    code: str
    message: str
    offset: int = 0


@dataclass(slots=True)
class ParsedProgram:
    level: str
    dialect: str = "prox"
    calls: list[Call] = field(default_factory=list)
    errors: list[ProgramError] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the program parsed without errors and holds at least one call."""
        return not self.errors and bool(self.calls)


def parse_program(source: str, level: str, dialect: str = "prox") -> ParsedProgram:
    """Parse untrusted refiner output into validated calls and errors. Never raises on
    ``source``; ``level`` and ``dialect`` are the caller's and must be known."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {sorted(DIALECTS)}, not {dialect!r}")
    program = ParsedProgram(level=level, dialect=dialect)
    try:
        if not isinstance(source, str):
            program.errors.append(ProgramError("syntax", f"program is {type(source).__name__}"))
        elif len(source) > MAX_PROGRAM_CHARS:
            program.errors.append(ProgramError(
                "too_long", f"program has {len(source)} characters (limit {MAX_PROGRAM_CHARS})"))
        else:
            position = 0
            while position < len(source):
                position = _parse_fast(program, source, position)
                if position < len(source):
                    end = _region_end(source, position)
                    _parse_into(program, source[position:end], position)
                    position = end
                    if program.errors and program.errors[-1].code == "too_many_calls":
                        break
    except Exception as exc:  # a last guard: the parser must never raise on model output
        program.errors.append(ProgramError("internal", f"parser failure: {type(exc).__name__}"))
    if not program.calls and not program.errors:
        program.errors.append(ProgramError("empty", "no function call found"))
    return program


def _parse_fast(program: ParsedProgram, source: str, start: int = 0) -> int:
    """Record the canonical lines from offset ``start`` on (fences and blank lines skipped);
    return the offset of the first line that is not canonical (``len(source)``: none)."""
    functions = DIALECTS[program.dialect]
    offset, n = start, len(source)
    while offset < n:  # line by line from ``start``: a split of the rest would make it O(n²)
        newline = source.find("\n", offset)
        line_end = n if newline < 0 else newline
        line = source[offset:line_end]
        match = _FAST_CALL.fullmatch(line)
        if match is None:
            if line.strip() and not _FENCE.fullmatch(line) and not _fast_statements(
                    program, functions, line, offset):
                return offset
        elif len(program.calls) >= MAX_CALLS or not _record_fast(program, functions, match,
                                                                 offset):
            return offset
        offset = line_end + 1
    return n


def _fast_statements(program: ParsedProgram, functions, line: str, offset: int) -> bool:
    """Record a line of ``;``-separated canonical calls. Only for lines without quotes or
    comments, where no ``;`` can hide inside a string; nothing is recorded unless all match."""
    if ";" not in line or any(c in line for c in "\"'#"):
        return False
    pieces, at = [], offset
    for piece in line.split(";"):
        if piece.strip():
            match = _FAST_CALL.fullmatch(piece)
            if match is None:
                return False
            pieces.append((match, at + len(piece) - len(piece.lstrip(" \t"))))
        at += len(piece) + 1
    if len(program.calls) + len(pieces) > MAX_CALLS:
        return False
    recorded = len(program.calls), len(program.errors)
    for match, piece_at in pieces:
        if not _record_fast(program, functions, match, piece_at):
            del program.calls[recorded[0]:], program.errors[recorded[1]:]
            return False
    return True


def _region_end(source: str, start: int) -> int:
    """The end of the lines from ``start`` that the ast path must read together: up to the
    first line break outside every call span (where the scanner starts afresh), or the end.
    Only the region is scanned, so a program is read a bounded number of times in all."""
    end = source.find("\n", start)
    end = len(source) if end < 0 else end
    position = start
    while (span := _next_call(source, position, end)) is not None:
        _, span_end, closed = span
        if not closed:
            return len(source)
        if span_end > end:
            line_end = source.find("\n", span_end)
            end = len(source) if line_end < 0 else line_end
        position = span_end
    return end


def _record_fast(program: ParsedProgram, functions, match: re.Match, at: int) -> bool:
    """Record one canonical call; False when the line needs the ast path instead."""
    name, k1, v1, k2, v2, k3, s1, k4, s2 = match.groups()
    if (k1 is not None and k2 is None) or (s2 is not None and k3 is not None and k4 is None):
        return False  # a positional argument after a keyword one: the ast path reports it
    name = ALIASES.get(name, name)
    signature = functions.get(name)
    # The common case, arguments in signature order with valid values, is recorded directly;
    # anything else takes the general binding and validation (and its error messages).
    if signature is not None and signature[0] == program.level and name != "remove_str":
        params, defaults = signature[1], signature[2]
        if v1 is not None:
            start, end = int(v1), int(v2)
            if (len(params) == 2 and k1 in (None, params[0]) and k2 in (None, params[1])
                    and start <= end <= MAX_LINE_NUMBER):
                program.calls.append(Call(name, {params[0]: start, params[1]: end}, at))
                return True
        elif s1 is not None:
            if len(params) == 2 and k3 in (None, params[0]):
                if s2 is None and params[1] in defaults:
                    program.calls.append(Call(name, {params[0]: _unescape(s1),
                                                     params[1]: defaults[params[1]]}, at))
                    return True
                if s2 is not None and k4 in (None, params[1]):
                    program.calls.append(Call(name, {params[0]: _unescape(s1),
                                                     params[1]: _unescape(s2)}, at))
                    return True
        elif not params:
            program.calls.append(Call(name, {}, at))
            return True
    if v1 is not None:
        values = [(k1, int(v1)), (k2, int(v2))]
    elif s1 is not None:
        values = [(k3, _unescape(s1))] + ([(k4, _unescape(s2))] if s2 is not None else [])
    else:
        values = []
    _accept(program, name, values, at)
    return True


def _parse_into(program: ParsedProgram, source: str, base: int = 0) -> None:
    """Scan ``source`` (which starts at offset ``base`` of the program) for calls and check
    them with ``ast``."""
    text = _FENCE.sub(lambda m: " " * len(m.group(0)), source)
    spans: list[tuple[int, int]] = []
    failure: ProgramError | None = None
    pos = 0
    for start, end, closed in _scan_calls(text):
        if start > pos and text[pos:start].strip(" \t\r\n;"):
            program.ignored.append(text[pos:start].strip())
        pos = end
        if len(program.calls) + len(spans) >= MAX_CALLS:
            failure = ProgramError("too_many_calls", f"more than {MAX_CALLS} calls", base + start)
            break
        if not closed:
            failure = ProgramError(
                "truncated",
                f"call at offset {base + start} is not closed: {text[start:start + 60]!r}",
                base + start)
            break
        spans.append((start, end))
    else:
        if text[pos:].strip(" \t\r\n;"):
            program.ignored.append(text[pos:].strip())
    nodes = _parse_spans(text, spans)
    for (start, end), node in zip(spans, nodes):
        _check_call(program, node, text[start:end], base + start)
    if failure is not None:
        program.errors.append(failure)


def _parse_spans(text: str, spans: list[tuple[int, int]]) -> list[ast.AST | Exception]:
    """The expression of every span: one ``ast.parse`` for all of them when they all parse
    (the common case, and one compile instead of one per call), else one per span."""
    with warnings.catch_warnings():
        # an invalid escape such as "\d" warns; the result must not depend on the filter
        warnings.simplefilter("ignore")
        if len(spans) > 1:
            try:
                body = ast.parse("\n".join(text[a:b].strip() for a, b in spans)).body
                if len(body) == len(spans) and all(isinstance(st, ast.Expr) for st in body):
                    return [st.value for st in body]
            except (SyntaxError, ValueError, MemoryError, RecursionError):
                pass
        nodes: list[ast.AST | Exception] = []
        for a, b in spans:
            try:
                nodes.append(ast.parse(text[a:b].strip(), mode="eval").body)
            except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
                nodes.append(exc)
        return nodes


_CALL_AT = re.compile(
    r"[ \t\r]*([A-Za-z_][A-Za-z0-9_]*(?:[ \t]*\.[ \t]*[A-Za-z_][A-Za-z0-9_]*)*)[ \t]*\(")
_NEXT_STATEMENT = re.compile(r"[\n;#]")
_PAREN_SPECIAL = re.compile(r"[()\[\]{}'\"#]")
_STRING_BODY = {
    '"': re.compile(r'(?:[^"\\\n]|\\.)*', re.S),
    "'": re.compile(r"(?:[^'\\\n]|\\.)*", re.S),
    '"""': re.compile(r'(?:[^"\\]|\\.|"(?!""))*', re.S),
    "'''": re.compile(r"(?:[^'\\]|\\.|'(?!''))*", re.S),
}


def _scan_calls(text: str, i: int = 0):
    """Yield ``(start, end, closed)`` for every ``name(...)`` at statement position.

    A name counts when it begins a line or follows ``;`` or a previous call; ``#`` starts a
    comment. The parenthesis is matched while skipping string literals, so
    ``normalize(")", "(")`` is one span.
    """
    while (span := _next_call(text, i, len(text))) is not None:
        yield span
        i = span[1]  # another call may follow on the same line


def _next_call(text: str, i: int, stop: int) -> tuple[int, int, bool] | None:
    """The first call whose name starts at a statement position in ``[i, stop)``, or None.
    ``i`` must be a statement position; nothing at or beyond ``stop`` is read but the call's
    own span."""
    while i < stop:
        match = _CALL_AT.match(text, i, stop)
        if match:
            end, closed = _match_paren(text, match.end() - 1)
            return match.start(1), end, closed
        nxt = _NEXT_STATEMENT.search(text, i, stop)
        if nxt is None:
            return None
        if nxt.group() == "#":
            newline = text.find("\n", nxt.start(), stop)
            if newline < 0:
                return None
            i = newline + 1
        else:
            i = nxt.end()
    return None


def _match_paren(text: str, open_idx: int) -> tuple[int, bool]:
    """Index just past the parenthesis matching ``text[open_idx]``, skipping string literals."""
    depth = 0
    i = open_idx
    n = len(text)
    while True:
        match = _PAREN_SPECIAL.search(text, i)
        if match is None:
            return n, False
        ch, k = match.group(), match.start()
        if ch in "([{":
            depth += 1
            i = k + 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return k + 1, True
            i = k + 1
        elif ch == "#":
            newline = text.find("\n", k)
            if newline < 0:
                return n, False
            i = newline
        else:
            i = _skip_string(text, k)


def _skip_string(text: str, i: int) -> int:
    """Index just past the string literal opening at ``i`` (an unterminated one-line string
    ends at its line break, a triple-quoted one at the end of the text)."""
    quote = text[i]
    delim = quote * 3 if text.startswith(quote * 3, i) else quote
    j = _STRING_BODY[delim].match(text, i + len(delim)).end()
    return j + len(delim) if text.startswith(delim, j) else j


def _check_call(program: ParsedProgram, node: ast.AST | Exception, span: str,
                offset: int) -> None:
    def fail(code: str, message: str) -> None:
        program.errors.append(ProgramError(code, message, offset))

    if isinstance(node, Exception):
        msg = node.msg if isinstance(node, SyntaxError) else str(node)[:80]
        return fail("syntax", f"{span[:60]!r}: {msg}")
    if not isinstance(node, ast.Call):
        return fail("syntax", f"{span[:60]!r} is not a single call")
    if not isinstance(node.func, ast.Name):
        return fail("attribute_call", f"only plain function names may be called: {span[:60]!r}")
    raw_name = node.func.id
    values: list[tuple[str | None, Any]] = []
    for arg in node.args:
        values.append((None, arg))
    for kw in node.keywords:
        if kw.arg is None:
            return fail("non_literal", f"{raw_name}(): '**' arguments are not allowed")
        values.append((kw.arg, kw.value))
    literal: list[tuple[str | None, Any]] = []
    for key, value in values:
        ok, result = _literal(value)
        if not ok:
            return fail(result[0], f"{raw_name}(): {result[1]}")
        literal.append((key, result))
    _accept(program, raw_name, literal, offset)


def _accept(program: ParsedProgram, raw_name: str, values: list[tuple[str | None, Any]],
            offset: int) -> None:
    """Check a call of ``raw_name`` with literal ``values`` against the dialect; record it."""
    def fail(code: str, message: str) -> None:
        program.errors.append(ProgramError(code, message, offset))

    functions = DIALECTS[program.dialect]
    name = ALIASES.get(raw_name, raw_name)
    if name not in functions:
        return fail("unknown_function",
                    f"{raw_name!r} is not a function of the {program.dialect} dialect")
    level, params, defaults = functions[name]
    if level != program.level:
        return fail("wrong_level", f"{raw_name}() is a {level}-level function, "
                                   f"not allowed in a {program.level}-level program")
    args, problem = _bind(name, params, defaults, values)
    if problem:
        return fail(*problem)
    problem = _validate(name, args)
    if problem:
        return fail(*problem)
    program.calls.append(Call(name, args, offset))


def _literal(node: ast.AST) -> tuple[bool, Any]:
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, bool)):
        return True, node.value
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) is int):
        return True, -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.Call):
        return False, ("nested_call", "arguments may not be calls")
    if isinstance(node, ast.JoinedStr):
        return False, ("non_literal", "f-strings are not allowed")
    return False, ("non_literal", f"argument {type(node).__name__} is not a literal")


def _bind(name, params, defaults, values):
    if name == "remove_lines" and "line_start" in params and any(k == "all" for k, _ in values):
        if len(values) != 1 or values[0][1] is not True:
            return None, ("bad_argument", "remove_lines(all=...) takes only all=True")
        return {"all": True}, None
    args: dict[str, Any] = {}
    positional = [v for k, v in values if k is None]
    if len(positional) > len(params):
        return None, ("bad_argument", f"{name}() takes {len(params)} arguments, "
                                      f"got {len(positional)} positional")
    for param, value in zip(params, positional):
        args[param] = value
    for key, value in values:
        if key is None:
            continue
        if key not in params:
            return None, ("bad_argument", f"{name}() has no argument {key!r}")
        if key in args:
            return None, ("bad_argument", f"{name}() got {key!r} twice")
        args[key] = value
    for param in params:
        if param not in args:
            if param not in defaults:
                return None, ("bad_argument", f"{name}() is missing {param!r}")
            args[param] = defaults[param]
    return args, None


def _validate(name: str, args: dict[str, Any]):
    for key, value in args.items():
        if key in _LINE_ARGS:
            if type(value) is not int:
                return "bad_argument", f"{name}(): {key} must be an integer, not {value!r}"
            if value < 0 or value > MAX_LINE_NUMBER:
                return "bad_number", f"{name}(): {key}={value} is out of range"
        elif key in ("source_str", "target_str", "del_str") and not isinstance(value, str):
            return "bad_argument", f"{name}(): {key} must be a string"
    if name == "remove_lines" and "all" not in args:
        start, end = line_range(args)
        if start > end:
            return "reversed_range", f"remove_lines(): start {start} > end {end}"
    if name == "remove_str" and not args["del_str"]:
        return "bad_argument", "remove_str(): del_str is empty"
    return None


def line_range(args: dict[str, Any]) -> tuple[int, int]:
    """The inclusive range of a ``remove_lines`` call, whatever its dialect's argument names."""
    if "line_start" in args:
        return args["line_start"], args["line_end"]
    return args["start_line"], args["end_line"]


# a removal as the classifier refiner writes it, the line kind in its trailing comment
_KIND_REMOVAL = re.compile(
    r"^remove_lines\(line_start=(\d{1,9}), line_end=(\d{1,9})\)  # ([a-z]{1,20})$",
    re.MULTILINE)


def removed_lines_by_kind(program: str, counts: dict[str, int]) -> None:
    """Add to ``counts`` the lines each kind-named removal of ``program`` covers (a run's
    blank lines included); calls without a kind, as LM refiners write them, count nothing."""
    for start, end, kind in _KIND_REMOVAL.findall(program):
        if int(end) >= int(start):
            counts[kind] = counts.get(kind, 0) + int(end) - int(start) + 1


def format_call(name: str, **args: Any) -> str:
    """Render a call as ProX refiners are trained to write it: keywords, double quotes."""
    inner = ", ".join(f"{k}={_literal_text(v)}" for k, v in args.items())
    return f"{name}({inner})"


def _literal_text(value: Any) -> str:
    if not isinstance(value, str):
        return repr(value)
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r"))
    return f'"{escaped}"'
