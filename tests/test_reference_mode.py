"""Reference mode against the ProX reference executor, on programs where it is well defined:
keyword arguments, double-quoted strings without ',', '=', '(', ')', quotes or line breaks,
ordered ranges."""

from baselines import reference_doc_keep, reference_execute
from hypothesis import assume, given, settings
from hypothesis import strategies as st
import pytest

from prox_dagster.execute import (ExecutionPolicy, decide_document, execute_document,
                                  growth_allowance)

REF = ExecutionPolicy.reference()
SAFE = st.text(alphabet="abcdefghij klmn.-_:;!?éü", min_size=1, max_size=6).filter(
    lambda s: s not in (" ",))
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


@st.composite
def documents(draw):
    n = draw(st.integers(1, 30))
    return "\n".join(" ".join(draw(st.lists(st.sampled_from(WORDS + ["a-b", "c.d"]),
                                            min_size=0, max_size=8))) for _ in range(n))


@st.composite
def well_defined_calls(draw):
    kind = draw(st.sampled_from(["remove", "normalize", "normalize1", "keep", "remove_all"]))
    if kind == "remove":
        start = draw(st.integers(0, 35))
        end = start + draw(st.integers(0, 8))
        return f"remove_lines(line_start={start}, line_end={end})"
    if kind == "normalize":
        return f'normalize(source_str="{draw(SAFE)}", target_str="{draw(SAFE)}")'
    if kind == "normalize1":
        return f'normalize(source_str="{draw(SAFE)}")'
    if kind == "remove_all":
        return "remove_lines(all=True)"
    return "keep_chunk()"


@pytest.mark.slow
@settings(max_examples=1500, deadline=None)
@given(documents(), st.lists(well_defined_calls(), min_size=1, max_size=6))
def test_reference_mode_equals_the_reference_executor(text, calls):
    if not text.split():
        return  # the reference divides by the word count: undefined on empty documents
    # our one departure: normalize calls may not make the text longer than the allowance
    # (a program repeating a growing call would double it each time); where the reference's
    # text grows past it after some call, ours counts errors instead
    normalizations = [c for c in calls if c.startswith("normalize")]
    bound = len(text) + growth_allowance(len(text))
    assume(all(len(reference_execute(text, "\n".join(normalizations[:k]))) <= bound
               for k in range(1, len(normalizations) + 1)))
    program = "\n".join(calls)
    n_lines = text.count("\n") + 1
    ours = execute_document(text, "keep_doc()", [(0, n_lines - 1, program)], REF)
    assert ours.text == reference_execute(text, program)


@given(st.text(max_size=40))
def test_reference_doc_decision(program):
    assert decide_document(program, REF)[0] == reference_doc_keep(program)
