from prox_dagster.sample import sample_texts
from prox_dagster.tokenization import (SAMPLE_VOCAB_SIZE, encode_documents, token_counts,
                                       tokenizer_fingerprint, train_bpe_tokenizer)


def test_default_tokenizer_training_is_deterministic(tmp_path, sample_tokenizer):
    from transformers import AutoTokenizer

    retrained = AutoTokenizer.from_pretrained(
        str(train_bpe_tokenizer(sample_texts(), tmp_path, vocab_size=SAMPLE_VOCAB_SIZE)))
    assert tokenizer_fingerprint(retrained) == tokenizer_fingerprint(sample_tokenizer)
    assert 4000 < len(sample_tokenizer) <= SAMPLE_VOCAB_SIZE  # merges run out before 8192


def test_encoding_for_pretraining_drops_bos_and_appends_eos(sample_tokenizer):
    texts = ["Hello world.", "", "A second, longer document about Python."]
    ids = encode_documents(sample_tokenizer, texts)
    eos, bos = sample_tokenizer.eos_token_id, sample_tokenizer.bos_token_id
    assert [x[-1] for x in ids] == [eos] * 3 and ids[1] == [eos]
    assert all(bos not in x for x in ids)
    assert [x[:-1] for x in ids] == [sample_tokenizer(t, add_special_tokens=False)["input_ids"]
                                     for t in texts]
    assert token_counts(sample_tokenizer, texts, batch_size=2) == [len(x) - 1 for x in ids]


def test_any_hugging_face_tokenizer_works(llama_tokenizer):
    text = "ProX refines every example."
    [ids] = encode_documents(llama_tokenizer, [text])
    assert ids == llama_tokenizer(text)["input_ids"][1:] + [llama_tokenizer.eos_token_id]
