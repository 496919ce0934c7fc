"""Tokenizers: loading any Hugging Face tokenizer, fast batched counting, fingerprints.

The default tokenizer (``"sample"``) works offline everywhere: a byte-level BPE trained on the
embedded sample crawl (by ``scripts/freeze_sample_data.py``) and shipped with the package, so it
is the same on every machine; it is unpacked under ``$PROX_CACHE_DIR`` (default
``~/.cache/prox-dagster``) on first use. Any other name is passed to
``AutoTokenizer.from_pretrained`` (a local folder in tests and CI; a hub id in production).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .environment import cache_dir

SAMPLE_TOKENIZER = "sample"
SAMPLE_TOKENIZER_VERSION = "sample-bpe-v2"
SAMPLE_VOCAB_SIZE = 8192
# written by scripts/freeze_sample_data.py: the same tokenizer on every machine
SAMPLE_TOKENIZER_FILE = Path(__file__).with_name("data") / "sample_tokenizer.json.gz"
SAMPLE_TOKENIZER_SHA256 = "48d9be80cb8edbe86f72343b582d39d6b9c04be4fbbdf982d8761df7e684ffa1"
DEFAULT_BATCH = 8192


@functools.lru_cache(maxsize=8)
def load_tokenizer(name_or_path: str = SAMPLE_TOKENIZER):
    """A ``PreTrainedTokenizerFast`` for ``name_or_path``; cached per process."""
    from transformers import AutoTokenizer

    if name_or_path == SAMPLE_TOKENIZER:
        return AutoTokenizer.from_pretrained(str(sample_tokenizer_path()))
    return AutoTokenizer.from_pretrained(name_or_path)


def sample_tokenizer_path() -> Path:
    """Folder of the default tokenizer, unpacked from the file shipped with the package (and
    checked against its hash) the first time it is asked for."""
    target = (cache_dir() / "tokenizers"
              / f"{SAMPLE_TOKENIZER_VERSION}-{SAMPLE_TOKENIZER_SHA256[:12]}")
    if (target / "tokenizer.json").is_file():
        return target
    with gzip.open(SAMPLE_TOKENIZER_FILE, "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != SAMPLE_TOKENIZER_SHA256:
        raise RuntimeError(f"{SAMPLE_TOKENIZER_FILE} does not hold the sample tokenizer "
                           "(its hash differs): reinstall the package")
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(data.decode()),
                                       bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       pad_token="<pad>")
        fast.save_pretrained(str(tmp))
        (tmp / "tokenizer.json").write_bytes(data)  # the shipped bytes, not a re-serialization
        try:
            os.rename(tmp, target)
        except OSError:  # another process unpacked it first: theirs is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def rust_tokenizer(tokenizer):
    """The Rust ``tokenizers.Tokenizer`` behind a HF tokenizer (or the object itself)."""
    return getattr(tokenizer, "backend_tokenizer", tokenizer)


PIECE_CHARS = 1 << 16
BATCH_CHARS = 1 << 21


def pieces(text: str, size: int = PIECE_CHARS, *, lone_space: bool = False) -> Iterator[str]:
    """``text`` in consecutive slices of at most ``size`` characters, each cut just before a
    space when its second half has one (so no word, and no byte-level BPE pre-token, is cut).
    ``lone_space``: only before a space between two other characters, where Llama-2's, Mistral's
    and byte-level BPE tokenizers give the pieces the ids they give the whole text (a cut in a
    run of spaces changes a few); token counts keep the first rule, on which the chunk
    boundaries of stored shards rest."""
    start, n = 0, len(text)
    while n - start > size:
        low, cut = start + size // 2, text.rfind(" ", start + size // 2, start + size)
        while lone_space and cut >= low and (text[cut - 1].isspace() or cut + 1 >= n
                                             or text[cut + 1].isspace()):
            cut = text.rfind(" ", low, cut)
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


# the files that define a Hugging Face tokenizer (what AutoTokenizer reads)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "merges.txt", "spiece.model", "sentencepiece.bpe.model")


def tokenizer_identity(name_or_path: str, *, revision: str | None = None,
                       resolve: bool = True) -> str:
    """What identifies a tokenizer without loading it: the shipped sample's hash, a hash of a
    local folder's tokenizer files, or a hub id at the commit its revision points at
    (``resolve=False``: as remembered, never asking the hub; :mod:`prox_dagster.hub`)."""
    if name_or_path == SAMPLE_TOKENIZER:
        return f"{SAMPLE_TOKENIZER_VERSION}:{SAMPLE_TOKENIZER_SHA256[:16]}"
    folder = Path(name_or_path)
    if folder.is_dir():
        digest = hashlib.sha256()
        found = False
        for name in TOKENIZER_FILES:
            path = folder / name
            if path.is_file():
                found = True
                digest.update(f"{name}\0".encode())
                with open(path, "rb") as fh:
                    while block := fh.read(1 << 20):
                        digest.update(block)
        if not found:
            raise ValueError(f"{name_or_path!r} holds no tokenizer files "
                             f"({', '.join(TOKENIZER_FILES[:3])}, ...)")
        return f"files:{digest.hexdigest()[:16]}"
    from .hub import hub_commit

    return f"{name_or_path}@{hub_commit(name_or_path, revision, resolve=resolve)}"
