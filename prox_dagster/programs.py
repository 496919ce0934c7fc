"""The ProX program language: function set, parser and validation.

A refiner's output is untrusted text. :func:`parse_program` turns it into a list of validated
calls and a list of errors and never raises, whatever the input. Nothing is ever evaluated: call
spans are located by a small scanner that understands Python string literals, each span is parsed
with ``ast.parse(mode="eval")``, and the tree is accepted only if it is a call of a whitelisted
name with literal arguments.

Function set (ProX paper, table 1)::

    doc level    drop_doc()            keep_doc()  (alias untouch_doc)
    chunk level  remove_lines(line_start, line_end)   or remove_lines(all=True)
                 normalize(source_str, target_str="")
                 keep_chunk()                         (alias skip_chunk)

What is accepted: positional or keyword arguments; single, double or triple quotes, escapes and
unicode; strings holding commas, parentheses, ``=``, quotes or newlines; one call per line,
several per line (with or without ``;``), or a call spread over lines; code fences; prose around
the calls (recorded in ``ignored``, not an error); a truncated last call (an error, the earlier
calls still stand); repeated calls.

Two dialects (chosen per refiner): ``prox`` above, and ``refinex``, the deletion-only chunk
programs of RefineX (Bi et al. 2025)::

    chunk level  remove_lines(start_line, end_line)
                 remove_str(line, del_str)   delete del_str from that line if it occurs exactly once
                 keep_all()

(the doc level is the same in both). Canonical lines such as
``remove_lines(line_start=3, line_end=7)`` take a regex fast path; everything else goes through the
scanner and ``ast``. Both end in the same binding and validation, so they accept the same calls.

What is rejected, each with a stable error code: ``unknown_function``, ``wrong_level``,
``attribute_call``, ``nested_call``, ``non_literal`` (names, f-strings, comprehensions, lambdas,
operators), ``bad_argument`` (wrong type, unknown keyword, duplicate, missing), ``bad_number``
(negative or over :data:`MAX_LINE_NUMBER`), ``reversed_range``, ``syntax``, ``truncated``,
``too_long``, ``too_many_calls`` and ``empty``.
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

# Canonical one-call lines: no escapes, no quotes inside strings, so the matched text is the value.
_FAST_CALL = re.compile(
    r"[ \t]*([a-z_]+)\((?:"
    r"|([a-z_]+)=(\d{1,7}), ([a-z_]+)=(\d{1,7})"
    r"|([a-z_]+)=\"([^\"\\\n]*)\"(?:, ([a-z_]+)=\"([^\"\\\n]*)\")?"
    r")\)[ \t]*")

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*)*")
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_+-]*\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Call:
    """One validated call. ``name`` is canonical (aliases resolved); ``args`` are all named."""

    name: str
    args: dict[str, Any]
    offset: int = 0


@dataclass(frozen=True)
class ProgramError:
    code: str
    message: str
    offset: int = 0


@dataclass
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
        if not _parse_fast(program, source):
            _parse_into(program, source)
    except Exception as exc:  # a last guard: the parser must never raise on model output
        program.errors.append(ProgramError("internal", f"parser failure: {type(exc).__name__}"))
    if not program.calls and not program.errors:
        program.errors.append(ProgramError("empty", "no function call found"))
    return program


def _parse_fast(program: ParsedProgram, source: str) -> bool:
    """Parse a program made only of canonical call lines; False (nothing recorded) otherwise."""
    if not isinstance(source, str) or len(source) > MAX_PROGRAM_CHARS:
        return False
    found = []
    offset = 0
    for line in source.split("\n"):
        if line.strip():
            match = _FAST_CALL.fullmatch(line)
            if match is None:
                return False
            found.append((match, offset))
        offset += len(line) + 1
    if not found or len(found) > MAX_CALLS:
        return False
    for match, at in found:
        name, k1, v1, k2, v2, s1, sv1, s2, sv2 = match.groups()
        if k1 is not None:
            values = [(k1, int(v1)), (k2, int(v2))]
        elif s1 is not None:
            values = [(s1, sv1)] + ([(s2, sv2)] if s2 is not None else [])
        else:
            values = []
        _accept(program, name, values, at)
    return True


def _parse_into(program: ParsedProgram, source: str) -> None:
    if not isinstance(source, str):
        program.errors.append(ProgramError("syntax", f"program is {type(source).__name__}"))
        return
    if len(source) > MAX_PROGRAM_CHARS:
        program.errors.append(ProgramError(
            "too_long", f"program has {len(source)} characters (limit {MAX_PROGRAM_CHARS})"))
        return
    text = _FENCE.sub(lambda m: " " * len(m.group(0)), source)
    pos = 0
    for start, name_end, end, closed in _scan_calls(text):
        if start > pos and text[pos:start].strip(" \t\r\n;"):
            program.ignored.append(text[pos:start].strip())
        pos = end
        if len(program.calls) >= MAX_CALLS:
            program.errors.append(ProgramError(
                "too_many_calls", f"more than {MAX_CALLS} calls", start))
            return
        if not closed:
            program.errors.append(ProgramError(
                "truncated", f"call at offset {start} is not closed: {text[start:start + 60]!r}",
                start))
            return
        _check_call(program, text[start:end], start)
    if text[pos:].strip(" \t\r\n;"):
        program.ignored.append(text[pos:].strip())


def _scan_calls(text: str):
    """Yield ``(start, name_end, end, closed)`` for every ``name(...)`` at statement position.

    A name counts when it begins a line or follows ``;`` or a previous call; its parenthesis is
    matched while skipping over string literals, so ``normalize(")", "(")`` is one span.
    """
    n = len(text)
    i = 0
    at_statement = True
    while i < n:
        ch = text[i]
        if ch == "\n" or ch == ";":
            at_statement = True
            i += 1
            continue
        if ch in " \t\r":
            i += 1
            continue
        if ch == "#":  # a comment runs to the end of the line
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        if at_statement:
            m = _IDENT.match(text, i)
            if m:
                j = m.end()
                while j < n and text[j] in " \t":
                    j += 1
                if j < n and text[j] == "(":
                    end, closed = _match_paren(text, j)
                    yield i, m.end(), end, closed
                    i = end
                    continue  # another call may follow on the same line
        at_statement = False
        i += 1


def _match_paren(text: str, open_idx: int) -> tuple[int, bool]:
    """Index just past the parenthesis matching ``text[open_idx]``, skipping string literals."""
    depth = 0
    i = open_idx
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1, True
        elif ch in "'\"":
            i = _skip_string(text, i)
            continue
        elif ch == "#":
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        i += 1
    return n, False


def _skip_string(text: str, i: int) -> int:
    quote = text[i]
    triple = text.startswith(quote * 3, i)
    delim = quote * 3 if triple else quote
    i += len(delim)
    n = len(text)
    while i < n:
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(delim, i):
            return i + len(delim)
        if not triple and text[i] == "\n":
            return i  # an unterminated one-line string ends at the line break
        i += 1
    return n


def _check_call(program: ParsedProgram, span: str, offset: int) -> None:
    def fail(code: str, message: str) -> None:
        program.errors.append(ProgramError(code, message, offset))

    try:
        with warnings.catch_warnings():
            # an invalid escape such as "\d" warns; the result must not depend on the filter
            warnings.simplefilter("ignore")
            tree = ast.parse(span.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        msg = exc.msg if isinstance(exc, SyntaxError) else str(exc)[:80]
        return fail("syntax", f"{span[:60]!r}: {msg}")
    node = tree.body
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


def format_call(name: str, **args: Any) -> str:
    """Render a call in the canonical keyword form refiners are trained to emit."""
    inner = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return f"{name}({inner})"
