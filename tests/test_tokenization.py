from prox_dagster.sample import sample_texts
from prox_dagster.tokenization import (SAMPLE_VOCAB_SIZE, tokenizer_fingerprint,
                                       train_bpe_tokenizer)


def test_default_tokenizer_training_is_deterministic(tmp_path, sample_tokenizer):
    from transformers import AutoTokenizer

    retrained = AutoTokenizer.from_pretrained(
        str(train_bpe_tokenizer(sample_texts(), tmp_path, vocab_size=SAMPLE_VOCAB_SIZE)))
    assert tokenizer_fingerprint(retrained) == tokenizer_fingerprint(sample_tokenizer)
    assert 4000 < len(sample_tokenizer) <= SAMPLE_VOCAB_SIZE  # merges run out before 8192
