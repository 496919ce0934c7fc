import hashlib

from prox_dagster.tokenization import (SAMPLE_TOKENIZER_SHA256, SAMPLE_VOCAB_SIZE,
                                       sample_tokenizer_path)


def test_the_sample_tokenizer_is_the_shipped_file_on_every_machine(sample_tokenizer):
    # shipped rather than trained on first use: training from the interpreter's documentation
    # gave other token counts on other machines
    data = (sample_tokenizer_path() / "tokenizer.json").read_bytes()
    assert hashlib.sha256(data).hexdigest() == SAMPLE_TOKENIZER_SHA256
    assert sample_tokenizer("hello world")["input_ids"] == [1, 4137, 309, 299, 278, 453]
    assert 4000 < len(sample_tokenizer) <= SAMPLE_VOCAB_SIZE  # merges run out before 8192
    assert (sample_tokenizer.bos_token, sample_tokenizer.eos_token) == ("<s>", "</s>")
