"""100,000 generated and mutated programs through the parser and the executor.

No exception escapes; nothing is ever evaluated (an audit hook watches for ``exec``/``eval`` and
a canary file must never appear); every kept output is a sub-sequence of the input lines, each
changed only by the normalizations its own chunk asked for.
"""

import random
import sys
from pathlib import Path

import pytest

from prox_dagster.execute import execute_document, growth_allowance
from prox_dagster.programs import parse_program

N_PROGRAMS = 100_000
LINES = [f"line {i}: the quick brown fox {i % 7} jumps, over (the) lazy=dog \"{i}\""
         for i in range(40)]
TEXT = "\n".join(LINES)
CHUNKS = [(0, 9), (10, 19), (20, 29), (30, 39)]
CANARY = Path("/tmp/prox-fuzz-canary")
HOSTILE = [
    f"__import__('os').system('touch {CANARY}')",
    f"open('{CANARY}', 'w').write('x')",
    f"exec(\"open('{CANARY}','w')\")",
    f"eval(\"open('{CANARY}','w')\")",
    f"normalize(source_str=open('{CANARY}','w'))",
    "remove_lines(line_start=(lambda: 1)(), line_end=2)",
    "keep_chunk().__class__.__bases__[0].__subclasses__()",
    "[remove_lines(1, 2) for _ in range(10**9)]",
    "remove_lines(line_start=1, line_end=9**9**9)",
    "normalize(source_str=f'{__import__(\"os\").getcwd()}')",
]


def _string(rng):
    body = rng.choice(["fox", "the ", " ", "", "lazy=dog", "(the)", ",", '"3"', "é", "ü\\n",
                       "quick brown", "\\\\", "'", "jumps, over"])
    quote = rng.choice(['"', "'", '"""', "'''"])
    if quote in ('"', "'"):
        body = body.replace(quote, "\\" + quote)
    return f"{quote}{body}{quote}"


def _call(rng):
    kind = rng.randrange(6)
    if kind == 0:
        a = rng.randrange(-2, 45)
        b = a + rng.randrange(-2, 6)
        return rng.choice([f"remove_lines(line_start={a}, line_end={b})",
                           f"remove_lines({a}, {b})", f"remove_lines({a}, line_end={b})",
                           "remove_lines(all=True)"])
    if kind == 1:
        s, t = _string(rng), _string(rng)
        return rng.choice([f"normalize(source_str={s}, target_str={t})",
                           f"normalize({s}, {t})", f"normalize({s})"])
    if kind == 2:
        return rng.choice(["keep_chunk()", "skip_chunk()", "keep_doc()", "drop_doc()"])
    if kind == 3:
        return rng.choice(HOSTILE)
    if kind == 4:
        return rng.choice(["Here is the program:", "# comment", "```python", "```", "",
                           "The chunk is clean."])
    return f"{rng.choice(['print', 'remove', 'x.y', 'normalize'])}({_string(rng)})"


def _program(rng):
    sep = rng.choice(["\n", "\n", "; ", " "])
    return sep.join(_call(rng) for _ in range(rng.randrange(1, 6)))


def _mutate(rng, program):
    chars = list(program)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(4)
        pos = rng.randrange(len(chars) + 1)
        if op == 0 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif op == 1:
            chars.insert(pos, rng.choice("()[]{}'\"\\,=;#\n 0123456789-_ax"))
        elif op == 2:
            chars = chars[:pos]  # truncation, as when max_new_tokens cuts a program
        else:
            chars[pos:pos] = list(_call(rng))
    return "".join(chars)


def _expected_lines(programs):
    """Each input line after its own chunk's normalizations (the executor's contract: a call
    after which the chunk would be longer than its allowance is skipped)."""
    lines = list(LINES)
    for (start, end), program in zip(CHUNKS, programs):
        limit = sum(len(line) + 1 for line in lines[start:end + 1])
        limit += growth_allowance(limit)
        for call in parse_program(program, "chunk").calls:
            if call.name != "normalize":
                continue
            source, target = call.args["source_str"], call.args["target_str"]
            if source in ("", " ") or "\n" in source or "\n" in target:
                continue
            changed = [line.replace(source, target) for line in lines[start:end + 1]]
            if sum(len(line) + 1 for line in changed) > limit:
                continue
            lines[start:end + 1] = changed
    return lines


def _is_subsequence(output, candidates):
    it = iter(candidates)
    return all(any(line == c for c in it) for line in output)


@pytest.fixture
def no_evaluation():
    events = []
    armed = {"on": False}

    def hook(event, args):
        # evaluation, a shell, or a file opened for writing (CPython may *read* a source file
        # to decorate a SyntaxError: that is not the program acting)
        writes = event == "open" and (any(c in str(args[1] or "") for c in "wax+")
                                      or str(args[0]) == str(CANARY))
        if armed["on"] and (event in ("exec", "os.system", "subprocess.Popen") or writes):
            events.append((event, str(args)[:80]))

    sys.addaudithook(hook)
    CANARY.unlink(missing_ok=True)
    armed["on"] = True
    yield events
    armed["on"] = False


@pytest.mark.slow
def test_fuzz_parse_and_execute(no_evaluation):
    rng = random.Random(20261122)
    statuses = {}
    for n in range(N_PROGRAMS):
        programs = [_program(rng) for _ in CHUNKS]
        if n % 2:
            k = rng.randrange(len(programs))
            programs[k] = _mutate(rng, programs[k])
        for program in programs:
            parse_program(program, "doc")
        result = execute_document(TEXT, "keep_doc()",
                                  [(a, b, p) for (a, b), p in zip(CHUNKS, programs)])
        statuses[result.status] = statuses.get(result.status, 0) + 1
        if result.status == "kept":
            output = result.text.split("\n") if result.text else []
            assert _is_subsequence(output, _expected_lines(programs)), programs
        elif result.status == "fallback_raw":
            assert result.text == TEXT
        else:
            assert result.text == ""
    assert no_evaluation == []
    assert not CANARY.exists()
    assert set(statuses) >= {"kept", "fallback_raw", "dropped_chunk"}, statuses


def test_the_audit_hook_sees_an_evaluation(no_evaluation):
    eval("1 + 1")  # the control: the hook that guards the fuzz run must see this
    assert [event for event, _ in no_evaluation] == ["exec"]


def test_fast_path_and_regions_equal_a_whole_ast_path_parse():
    from prox_dagster.programs import ParsedProgram, _parse_into

    rng = random.Random(5)
    for n in range(20_000):
        program = _program(rng)
        if n % 2:
            program = _mutate(rng, program)
        for level in ("chunk", "doc"):
            fast = parse_program(program, level)
            whole = ParsedProgram(level)
            _parse_into(whole, program)
            if not whole.calls and not whole.errors:
                whole.errors.append(None)  # parse_program adds "empty" in that case
            assert [(c.name, c.args) for c in fast.calls] == [
                (c.name, c.args) for c in whole.calls], program
            assert [e.code for e in fast.errors] == [
                e.code if e else "empty" for e in whole.errors], program
