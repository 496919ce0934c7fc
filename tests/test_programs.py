import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prox_dagster.programs import MAX_PROGRAM_CHARS, parse_program


def calls(source, level="chunk"):
    parsed = parse_program(source, level)
    return [(c.name, c.args) for c in parsed.calls], [e.code for e in parsed.errors]


def test_keyword_and_positional_arguments_resolve_to_named_args():
    assert calls("remove_lines(line_start=3, line_end=7)") == (
        [("remove_lines", {"line_start": 3, "line_end": 7})], [])
    assert calls("remove_lines(3, line_end=7)")[0] == [
        ("remove_lines", {"line_start": 3, "line_end": 7})]
    assert calls('normalize("a", "b")')[0] == [
        ("normalize", {"source_str": "a", "target_str": "b"})]
    assert calls("normalize(source_str='x')")[0] == [
        ("normalize", {"source_str": "x", "target_str": ""})]
    assert calls("remove_lines(all=True)")[0] == [("remove_lines", {"all": True})]


def test_strings_with_commas_quotes_parens_equals_and_newlines():
    source = ('normalize(source_str="a, b (c) = \\"d\\"", target_str=\'it\\\'s\')\n'
              'normalize("""multi\nline""", "x")')
    got, errors = calls(source)
    assert errors == []
    assert got == [("normalize", {"source_str": 'a, b (c) = "d"', "target_str": "it's"}),
                   ("normalize", {"source_str": "multi\nline", "target_str": "x"})]


def test_real_refiner_output_shapes():
    source = """```python
remove_lines(line_start=0, line_end=2); remove_lines(5, 5)
normalize(
    source_str="Ã©",
    target_str="é",
)
```
These lines are navigation.
keep_chunk() skip_chunk()"""
    got, errors = calls(source)
    assert errors == []
    assert [g[0] for g in got] == ["remove_lines", "remove_lines", "normalize", "keep_chunk",
                                   "keep_chunk"]
    parsed = parse_program(source, "chunk")
    assert any("navigation" in text for text in parsed.ignored)
    assert calls("untouch_doc()", "doc")[0] == [("keep_doc", {})]
    assert calls("drop_doc()  # gopher_stop_words", "doc") == ([("drop_doc", {})], [])


def test_truncated_last_call_keeps_earlier_calls():
    got, errors = calls('remove_lines(line_start=1, line_end=2)\nnormalize(source_str="abc')
    assert got == [("remove_lines", {"line_start": 1, "line_end": 2})]
    assert errors == ["truncated"]


@pytest.mark.parametrize("source, code", [
    ("os.system('rm -rf /')", "attribute_call"),
    ("__import__('os')", "unknown_function"),
    ("eval('1')", "unknown_function"),
    ("remove_lines(line_start=len('ab'), line_end=3)", "nested_call"),
    ("remove_lines(line_start=x, line_end=3)", "non_literal"),
    ("normalize(source_str=f'{x}')", "non_literal"),
    ("normalize(source_str=[c for c in 'ab'])", "non_literal"),
    ("normalize(source_str=lambda: 1)", "non_literal"),
    ("remove_lines(line_start=1 + 1, line_end=3)", "non_literal"),
    ("remove_lines(**{'line_start': 1})", "non_literal"),
    ("remove_lines(line_start=-1, line_end=3)", "bad_number"),
    ("remove_lines(line_start=1, line_end=10**100)", "non_literal"),
    ("remove_lines(line_start=1, line_end=" + "9" * 30 + ")", "bad_number"),
    ("remove_lines(line_start=1, line_end=" + "9" * 5000 + ")", "syntax"),
    ("remove_lines(line_start=7, line_end=3)", "reversed_range"),
    ("remove_lines(line_start='1', line_end=3)", "bad_argument"),
    ("remove_lines(line_start=True, line_end=3)", "bad_argument"),
    ("remove_lines(1, 2, 3)", "bad_argument"),
    ("remove_lines(line_start=1)", "bad_argument"),
    ("remove_lines(1, line_start=1)", "bad_argument"),
    ("remove_lines(all=False)", "bad_argument"),
    ("normalize(source_str=1)", "bad_argument"),
    ("normalize(bad_kw='a')", "bad_argument"),
    ("drop_doc()", "wrong_level"),
    ("remove_lines(1, 2) keep_chunk(", "truncated"),
    ("keep_chunk(" + "(" * 300 + ")" * 301, "syntax"),
    ("", "empty"),
    ("The chunk looks clean to me.", "empty"),
])
def test_rejections_have_stable_codes(source, code):
    parsed = parse_program(source, "chunk")
    assert code in [e.code for e in parsed.errors], parsed.errors
    assert not parsed.ok


def test_size_limit():
    parsed = parse_program("keep_chunk()\n" * (MAX_PROGRAM_CHARS // 10), "chunk")
    assert [e.code for e in parsed.errors] == ["too_long"] and parsed.calls == []


def test_level_must_be_known():
    with pytest.raises(ValueError):
        parse_program("keep_doc()", "page")


_pieces = st.sampled_from([
    "remove_lines(", "normalize(", "keep_chunk()", "drop_doc()", "line_start=", "line_end=",
    "source_str=", "target_str=", "'", '"', '"""', "(", ")", ",", "=", "\n", ";", " ", "\\",
    "1", "-3", "99999999999", "True", "x", "os.", "__import__", "f'", "#", "```", "lambda",
    "[", "]", "{", "}", "*", "é", "\x00",
])


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(_pieces, max_size=40).map("".join)))
def test_parser_never_raises_and_only_returns_whitelisted_literal_calls(source):
    for level in ("doc", "chunk"):
        parsed = parse_program(source, level)
        for call in parsed.calls:
            assert call.name in {"drop_doc", "keep_doc", "remove_lines", "normalize",
                                 "keep_chunk"}
            assert all(isinstance(v, (str, int, bool)) for v in call.args.values())
        assert all(e.code and e.message for e in parsed.errors)


def test_invalid_escapes_keep_python_semantics_whatever_the_warning_filter():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parsed = parse_program('normalize("\\d+")', "chunk")
    assert parsed.ok and parsed.calls[0].args["source_str"] == "\\d+"


def test_fast_path_and_ast_path_agree_on_canonical_lines():
    from prox_dagster.programs import ParsedProgram, _parse_fast, _parse_into

    sources = ["remove_lines(line_start=3, line_end=7)", 'normalize(source_str="a b", '
               'target_str="")', "keep_chunk()\nskip_chunk()", "remove_lines(line_end=2, "
               "line_start=9)", 'normalize(source_str="x")', "drop_doc()",
               "remove_lines(line_start=1, line_end=9999999)", 'normalize(target_str="y")',
               "remove_lines(start_line=1, end_line=2)"]
    for source in sources:
        fast, slow = ParsedProgram("chunk"), ParsedProgram("chunk")
        assert _parse_fast(fast, source) == len(source)
        _parse_into(slow, source)
        assert fast.calls == slow.calls and [e.code for e in fast.errors] == [
            e.code for e in slow.errors], source


def test_format_call_round_trips_through_the_parser():
    from prox_dagster.programs import format_call

    for value in ["plain", 'say "hi"', "back\\slash", "two\nlines", "é’, (x)=y", ""]:
        text = format_call("normalize", source_str=value, target_str="t")
        assert text.startswith('normalize(source_str="')
        [call] = parse_program(text, "chunk").calls
        assert call.args == {"source_str": value, "target_str": "t"}
    assert format_call("remove_lines", line_start=1, line_end=2) == \
        "remove_lines(line_start=1, line_end=2)"


def test_positional_after_keyword_is_a_syntax_error_on_every_path():
    for source in ("remove_lines(line_start=1, 2)", 'normalize(source_str="a", "b")'):
        assert [e.code for e in parse_program(source, "chunk").errors] == ["syntax"]
