"""The tokenizer that counts, chunks and tokenizes clean text."""

import dagster as dg

from prox_dagster.chunking import DEFAULT_MAX_TOKENS
from prox_dagster.tokenization import SAMPLE_TOKENIZER, load_tokenizer, tokenizer_fingerprint


class TokenizerResource(dg.ConfigurableResource):
    """Any Hugging Face tokenizer (local folder or hub id); ``sample`` is the offline default."""

    name_or_path: str = SAMPLE_TOKENIZER
    max_chunk_tokens: int = DEFAULT_MAX_TOKENS

    def get(self):
        return load_tokenizer(self.name_or_path)

    def fingerprint(self) -> str:
        return tokenizer_fingerprint(self.get())
