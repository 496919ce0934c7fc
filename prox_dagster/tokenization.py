"""Tokenizers: loading any Hugging Face tokenizer, fast batched counting, fingerprints.

The default tokenizer (``"sample"``) works offline everywhere: a byte-level BPE trained with
``tokenizers`` on the embedded sample crawl the first time it is asked for, then cached under
``$PROX_CACHE_DIR`` (default ``~/.cache/prox-dagster``). Any other name is passed to
``AutoTokenizer.from_pretrained`` (a local folder in tests and CI; a hub id in production).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

SAMPLE_TOKENIZER = "sample"
SAMPLE_TOKENIZER_VERSION = "sample-bpe-v1"
SAMPLE_VOCAB_SIZE = 8192
DEFAULT_BATCH = 8192


def cache_dir() -> Path:
    return Path(os.environ.get("PROX_CACHE_DIR", Path.home() / ".cache" / "prox-dagster"))


@functools.lru_cache(maxsize=8)
def load_tokenizer(name_or_path: str = SAMPLE_TOKENIZER):
    """A ``PreTrainedTokenizerFast`` for ``name_or_path``; cached per process."""
    from transformers import AutoTokenizer

    if name_or_path == SAMPLE_TOKENIZER:
        return AutoTokenizer.from_pretrained(str(sample_tokenizer_path()))
    return AutoTokenizer.from_pretrained(name_or_path)


def sample_tokenizer_path() -> Path:
    """Folder of the default tokenizer, trained on the sample crawl on first use.

    The folder name holds a hash of the training texts, so a change to the sample generator
    (or to ``pydoc_data`` across Python versions) trains a new tokenizer instead of reusing one
    that no longer matches.
    """
    from .sample import sample_texts

    texts = sample_texts()
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:12]
    target = cache_dir() / "tokenizers" / f"{SAMPLE_TOKENIZER_VERSION}-{digest}"
    if (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".train-", dir=target.parent))
    try:
        train_bpe_tokenizer(texts, tmp, vocab_size=SAMPLE_VOCAB_SIZE)
        try:
            os.rename(tmp, target)
        except OSError:  # another process trained it first: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def train_bpe_tokenizer(texts: Iterable[str], out_dir: str | os.PathLike,
                        vocab_size: int = SAMPLE_VOCAB_SIZE) -> Path:
    """Train a Llama-style byte-level BPE (``<s>`` prepended, ``</s>`` as EOS) and save it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>")
    out = Path(out_dir)
    fast.save_pretrained(str(out))
    return out


def rust_tokenizer(tokenizer):
    """The Rust ``tokenizers.Tokenizer`` behind a HF tokenizer (or the object itself)."""
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


PIECE_CHARS = 1 << 16
BATCH_CHARS = 1 << 21


def pieces(text: str, size: int = PIECE_CHARS) -> Iterator[str]:
    """``text`` in consecutive slices of at most ``size`` characters, each cut just before a
    space when its second half has one (so no word, and no byte-level BPE pre-token, is cut)."""
    start, n = 0, len(text)
    while n - start > size:
        cut = text.rfind(" ", start + size // 2, start + size)
        cut = cut if cut > start else start + size
        yield text[start:cut]
        start = cut
    yield text[start:]


def token_counts(tokenizer, texts: Sequence[str], *, add_special_tokens: bool = False,
                 batch_size: int = DEFAULT_BATCH) -> list[int]:
    """Token counts of ``texts``, tokenized in batches by the Rust backend.

    Memory is bounded whatever the texts' lengths: a batch holds at most ``batch_size`` texts
    and about 2 MiB of characters, and a long text is counted in 64 KiB :func:`pieces` (the
    encodings of one 51 MB line took 6 GB). Cutting before a space leaves the count of
    tokenizers that pre-tokenize at spaces (byte-level BPE, Metaspace) unchanged; one without a
    pre-tokenizer may differ by a token or two per piece.
    """
    backend = rust_tokenizer(tokenizer)
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    counts = [0] * len(texts)
    if add_special_tokens:
        special = len(backend.encode("", add_special_tokens=True).ids)
        counts = [special] * len(texts)
    batch: list[str] = []
    owners: list[int] = []
    chars = 0

    def flush() -> None:
        for owner, encoding in zip(owners, encode(batch, add_special_tokens=False)):
            counts[owner] += len(encoding.ids)
        batch.clear()
        owners.clear()

    for index, text in enumerate(texts):
        for piece in pieces(text) if len(text) > PIECE_CHARS else (text,):
            batch.append(piece)
            owners.append(index)
            chars += len(piece)
            if chars >= BATCH_CHARS or len(batch) >= batch_size:
                flush()
                chars = 0
    if batch:
        flush()
    return counts


def tokenizer_name(tokenizer) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


@functools.lru_cache(maxsize=8)
def _fingerprint_of(serialized: str) -> str:
    return hashlib.sha256(serialized.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=8)  # tokenizers come from load_tokenizer's cache: one per name
def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the tokenizer's full definition (vocabulary, merges, normalizer...)."""
    backend = rust_tokenizer(tokenizer)
    serialized = backend.to_str() if hasattr(backend, "to_str") else json.dumps(
        tokenizer.get_vocab(), sort_keys=True)
    return _fingerprint_of(serialized)
