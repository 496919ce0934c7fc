import pytest

from prox_dagster.execute import ExecutionPolicy, decide_document, execute_document

LINES = [f"line {i} has five words" for i in range(20)]
TEXT = "\n".join(LINES)
REF = ExecutionPolicy.reference()


def run(chunks, text=TEXT, doc="keep_doc()", policy=None):
    return execute_document(text, doc, chunks, policy)


def test_keep_everything_returns_the_text_untouched():
    result = run([(0, 19, "keep_chunk()")])
    assert (result.text, result.status, result.n_ops, result.n_errors) == (TEXT, "kept", 0, 0)


def test_drop_doc_drops_and_unparseable_doc_program_keeps():
    assert run([], doc="drop_doc()").status == "dropped_doc"
    assert run([], doc="garbage output").status == "kept"
    assert decide_document("I'd drop nothing: keep_doc()")[0] is True
    assert decide_document("I'd drop nothing: keep_doc()", REF)[0] is False  # reference quirk


def test_removals_merge_clip_and_count_out_of_range_as_errors():
    result = run([(0, 9, "remove_lines(line_start=2, line_end=4)\nremove_lines(4, 6)"),
                  (10, 19, "remove_lines(line_start=18, line_end=25)")])
    assert result.text.split("\n") == LINES[:2] + LINES[7:18]
    assert result.status == "kept" and result.n_ops == 3 and result.n_errors == 1


def test_two_errors_fall_back_to_the_raw_text():
    result = run([(0, 9, "remove_lines(line_start=1, line_end=3)\nremove_lines(50, 60)"),
                  (10, 19, "os.system('x')")])
    assert result.status == "fallback_raw" and result.text == TEXT and result.n_errors == 2


def test_empty_program_is_nothing_to_do_not_an_error():
    result = run([(0, 9, ""), (10, 19, "")])
    assert result.status == "kept" and result.n_errors == 0


def test_drop_thresholds():
    assert run([(0, 19, "remove_lines(0, 18)")]).status == "dropped_chunk"  # 5 words left
    assert run([(0, 19, "remove_lines(0, 17)")]).status == "dropped_chunk"  # 10 words: <= 10
    assert run([(0, 19, "remove_lines(0, 16)")]).status == "kept"  # 15 words
    lenient = ExecutionPolicy(min_words=3, drop_word_ratio=0.01)
    assert run([(0, 19, "remove_lines(0, 18)")], policy=lenient).status == "kept"
    assert run([(0, 19, "remove_lines(all=True)")]).status == "dropped_chunk"


def test_a_cjk_article_is_not_dropped_for_having_few_spaces():
    from prox_dagster.words import word_count

    # a Chinese news page: four lines of menu, then an article of 120 characters in 3 paragraphs
    article = ["东方网记者报道：今年的中国旅游日在上海举行，市文化和旅游局发布了四十条精品线路。" * 2,
               "活动期间，全市多家景区推出门票优惠，吸引了大量市民和游客前来参观游览。" * 2,
               "主办方表示，将继续丰富文旅产品供给，让更多人感受城市的魅力和温度。" * 2]
    text = "\n".join(["首页", "新闻", "体育", "联系我们", *article])
    chunks = [(0, 6, "remove_lines(line_start=0, line_end=3)")]
    assert word_count("\n".join(article), "split") == 3
    # every ideograph is a word; the punctuation (，。：) is not
    ideographs = sum("\u4e00" <= ch <= "\u9fff" for ch in "".join(article))
    assert ideographs == 198 and word_count("\n".join(article), "cjk") == 3 + ideographs
    kept = run(chunks, text=text)
    assert kept.status == "kept" and kept.text.split("\n") == article
    # the reference counts str.split words: three, so the article is dropped
    assert run(chunks, text=text, policy=REF).status == "dropped_chunk"
    assert REF.word_unit == "split" and ExecutionPolicy().word_unit == "cjk"
    with pytest.raises(ValueError, match="word_unit='words' is not one of"):
        ExecutionPolicy(word_unit="words")


def test_word_count_of_a_long_text_counts_what_split_does_and_every_cjk_character():
    from prox_dagster.tokenization import PIECE_CHARS
    from prox_dagster.words import word_count

    text = ("alpha beta 中文字 gamma\n" * (3 * PIECE_CHARS // 20))
    assert len(text) > 2 * PIECE_CHARS
    assert word_count(text, "split") == len(text.split())
    assert word_count(text, "cjk") == len(text.split()) + 3 * text.count("中文字")


def test_normalize_applies_to_the_emitting_chunk_only_by_default():
    text = "a-b\na-b\na-b"
    chunks = [(0, 1, "keep_chunk()"), (2, 2, 'normalize(source_str="-", target_str="+")')]
    policy = ExecutionPolicy(min_words=0, drop_word_ratio=0)
    assert run(chunks, text=text, policy=policy).text == "a-b\na-b\na+b"
    ref = ExecutionPolicy.reference(min_words=0, drop_word_ratio=0)
    assert run(chunks, text=text, policy=ref).text == "a+b\na+b\na+b"


def test_normalizations_run_before_removals_and_blank_sources_are_ignored():
    chunks = [(0, 19, 'normalize("five", "5")\nnormalize(" ", "_")\nnormalize("", "x")\n'
                      "remove_lines(0, 0)")]
    result = run(chunks)
    assert result.text.split("\n")[0] == "line 1 has 5 words"
    assert "_" not in result.text and result.n_ops == 2


def test_one_argument_normalize_deletes():
    result = run([(0, 19, "normalize('has ')")])
    assert result.text.split("\n")[3] == "line 3 five words"


def test_multiline_normalize_is_an_error_in_chunk_scope():
    result = run([(0, 19, 'normalize("words\\nline", "x")')])
    assert result.n_errors == 1 and result.text == TEXT


def test_remove_all_scope():
    chunks = [(0, 9, "remove_lines(all=True)"), (10, 19, "keep_chunk()")]
    assert run(chunks).text.split("\n") == LINES[10:]
    assert run(chunks, policy=REF).status == "dropped_chunk"


# The reference (GAIR-NLP/ProX utils/chunk_utils.py) on cases where it is well defined.
@pytest.mark.parametrize("program, expected_lines, status", [
    ("remove_lines(line_start=0, line_end=1)", LINES[2:], "kept"),
    ("remove_lines(line_start=0, line_end=1)\nremove_lines(line_start=1, line_end=3)",
     LINES[4:], "kept"),
    ('normalize(source_str="line", target_str="row")',
     [x.replace("line", "row") for x in LINES], "kept"),
    ("remove_lines(line_start=15, line_end=30)", LINES[:15], "kept"),
    ("remove_lines(line_start=25, line_end=30)\nremove_lines(line_start=40, line_end=41)",
     LINES, "fallback_raw"),
    ("remove_lines(line_start=0, line_end=19)", [], "dropped_chunk"),
])
def test_reference_policy(program, expected_lines, status):
    result = execute_document(TEXT, "keep_doc()", [(0, 19, program)], REF)
    assert result.status == status
    if status != "dropped_chunk":
        assert result.text == "\n".join(expected_lines)


def test_refinex_dialect_deletes_unique_strings_and_line_ranges():
    text = "keep this line of text\nad: buy now buy now\nclick here to subscribe today\n" + TEXT
    program = ('remove_str(line=2, del_str="click here to ")\n'
               'remove_str(line=1, del_str="buy now")\n'  # not unique in its line: an error
               "remove_lines(start_line=3, end_line=4)\nkeep_all()")
    result = execute_document(text, "keep_doc()", [(0, 22, program)], dialect="refinex")
    lines = result.text.split("\n")
    assert lines[:3] == ["keep this line of text", "ad: buy now buy now", "subscribe today"]
    assert lines[3:] == LINES[2:]
    assert result.n_errors == 1 and result.status == "kept"
    # the same program is mostly unknown functions in the ProX dialect: raw text kept
    assert execute_document(text, "keep_doc()", [(0, 22, program)]).status == "fallback_raw"


def test_normalize_cannot_blow_a_chunk_up():
    """A refiner looping on one growing call (issue: 22 x "o" -> "oo" turned 2.5 KB into 671 MB)
    gets errors, checked before any string is built, and the ProX error policy applies."""
    text = "\n".join(["Good old words of a long and proper sentence, one more good line."] * 35)
    looping = "\n".join(['normalize(source_str="o", target_str="oooooooo")'] * 100)
    result = execute_document(text, "keep_doc()", [(0, 34, looping)])
    assert result.status == "fallback_raw" and result.n_errors == 100 and result.text == text
    # growth within the allowance (10% of the chunk, at least 64 characters) is applied
    small = execute_document(text, "keep_doc()",
                             [(0, 34, 'normalize(source_str="proper", target_str="properly")')])
    assert small.status == "kept" and small.text.count("properly") == 35
    assert len(small.text) <= len(text) + max(64, len(text) // 10)
    document = execute_document(text, "keep_doc()", [(0, 34, looping)],
                                ExecutionPolicy(normalize_scope="document"))
    assert document.n_errors == 100 and len(document.text) == len(text)


@pytest.mark.parametrize("unit", ["split", "cjk"])
def test_a_chunk_kept_whole_is_judged_by_its_words_around_min_words(unit):
    """Nothing removed or rewritten: the count that stops past min_words decides as the full
    count would, for ten words, eleven, and a page of CJK with no space."""
    policy = ExecutionPolicy(word_unit=unit, min_words=10)

    def status(text: str) -> str:
        return execute_document(text, "keep_doc()", [(0, text.count("\n"), "keep_chunk()")],
                                policy).status

    assert status(" ".join(["word"] * 10)) == "dropped_chunk"
    assert status("\n".join(["word"] * 11)) == "kept"
    assert status("") == "dropped_chunk"
    assert status("日本語の文章です。" * 3) == ("kept" if unit == "cjk" else "dropped_chunk")
