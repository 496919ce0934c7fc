import pytest
from baselines import reference_chunks

from prox_dagster.chunking import chunk_documents, chunk_lines, number_line


def test_numbering_is_global_and_at_least_three_digits():
    assert number_line(0, "x") == "[000]x"
    assert number_line(1234, "y") == "[1234]y"


def test_chunks_cover_every_line_once_under_budget(sample_tokenizer):
    text = "\n".join(f"sentence number {i} " * (1 + i % 7) for i in range(300))
    chunks = chunk_lines(text, sample_tokenizer, max_tokens=200)
    assert chunks[0].line_start == 0 and chunks[-1].line_end == 299
    for prev, nxt in zip(chunks, chunks[1:]):
        assert nxt.line_start == prev.line_end + 1
    for chunk in chunks:
        lines = chunk.text.split("\n")
        assert len(lines) == chunk.line_end - chunk.line_start + 1
        assert lines[0].startswith(f"[{chunk.line_start:03d}]")
        assert chunk.n_tokens <= 200
        assert chunk.n_tokens == sum(len(sample_tokenizer.encode(x)) for x in lines)


def test_a_line_over_budget_is_a_chunk_of_its_own_cut_to_the_budget(sample_tokenizer):
    long_line = "long words " * 300
    text = "short\n" + long_line + "\nshort again\nend"
    chunks = chunk_lines(text, sample_tokenizer, max_tokens=50)
    assert [(c.line_start, c.line_end) for c in chunks] == [(0, 0), (1, 1), (2, 3)]
    assert [c.truncated for c in chunks] == [False, True, False]
    cut = chunks[1]
    assert 40 < cut.n_tokens <= 50 and cut.n_tokens == len(sample_tokenizer.encode(cut.text))
    assert cut.text.startswith("[001]long words") and number_line(1, long_line).startswith(
        cut.text)
    # a budget below the number's own tokens still keeps the number
    [tiny] = chunk_lines(long_line, sample_tokenizer, max_tokens=1)
    assert tiny.truncated and tiny.text.startswith("[000]")


def test_empty_text_is_one_empty_line_chunk(sample_tokenizer):
    [chunk] = chunk_lines("", sample_tokenizer)
    assert (chunk.line_start, chunk.line_end, chunk.text) == (0, 0, "[000]")


def test_max_tokens_must_be_positive(sample_tokenizer):
    with pytest.raises(ValueError):
        chunk_lines("x", sample_tokenizer, max_tokens=0)


def test_identical_to_the_reference_on_real_documents(llama_tokenizer):
    import json

    from conftest import shared_path

    path = shared_path("data", "web", "dragnet", "docs.jsonl")
    texts = [json.loads(line)["text"] for line in path.open()][:60]
    cut = 0
    for budget in (1500, 120):
        ours = chunk_documents(texts, llama_tokenizer, budget)
        cut += sum(c.truncated for chunks in ours for c in chunks)
        for text, chunks in zip(texts, ours):
            reference = reference_chunks(text, llama_tokenizer, budget)
            assert len(chunks) == len(reference)
            for chunk, expected in zip(chunks, reference):
                # a line over the budget: the reference keeps it whole, we cut it to the budget
                assert expected.startswith(chunk.text) if chunk.truncated \
                    else chunk.text == expected
    assert cut > 0  # real pages have lines over 120 tokens
