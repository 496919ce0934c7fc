"""Token files that training stacks read without conversion, written by streaming a clean shard.

``parquet`` (``id``, ``input_ids``, ``n_tokens``), ``megatron`` (``.bin`` + ``.idx`` as
megatron-core's ``IndexedDataset`` reads them) and ``litgpt`` (a token stream per shard, which
:func:`pack_litgpt` packs across shards into ``LITPKDS`` chunks and a litdata set). Every writer
streams, and every file is written atomically. The byte layouts: ``docs/architecture.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic_writes import temp_file, write_atomic
from .tokenization import BATCH_CHARS, pieces, rust_tokenizer, tokenizer_name

FORMATS = ("parquet", "megatron", "litgpt")
KEPT_STATUSES = ("kept", "fallback_raw")

# The dtype codes that Megatron's indexed dataset and litgpt's packed dataset share.
DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3,
               np.dtype(np.int32): 4, np.dtype(np.int64): 5, np.dtype(np.float64): 6,
               np.dtype(np.float32): 7, np.dtype(np.uint16): 8}
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
LITGPT_MAGIC = b"LITPKDS"
# litdata's torch dtype codes (litdata.constants._TORCH_DTYPES_MAPPING)
LITDATA_DTYPES = {np.dtype(np.uint8): 11, np.dtype(np.int8): 12, np.dtype(np.int16): 13,
                  np.dtype(np.int32): 15, np.dtype(np.int64): 17, np.dtype(np.uint16): 20}
LITDATA_INDEX = "index.json"
PROX_CHUNK_SIZE = 2049 * 1024  # tokens per litgpt chunk in ProX's preparation script
HISTOGRAM_EDGES = [2 ** k for k in range(0, 21)]  # document lengths: 1, 2, 4, ... 1M tokens
DOCUMENTS_SUFFIX = ".documents.pq"
DOCUMENTS_SCHEMA = pa.schema([("id", pa.string()), ("text_hash", pa.uint64()),
                              ("n_tokens", pa.int64())])
FILTER_DOCUMENTS = 1024  # documents a filtered copy reads and writes at a time


def text_hash(text: str) -> int:
    """A document's text as 64 bits: what makes two documents copies of each other."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little")


def histogram_table(counts: list[int], edges: list[int] = HISTOGRAM_EDGES) -> str:
    """Document lengths in tokens as a Markdown table, one row per non-empty bin with its
    edges (bin ``i`` holds lengths from ``edges[i]`` to ``edges[i + 1] - 1``)."""
    total = sum(counts) or 1
    rows = []
    for i, count in enumerate(counts):
        if not count:
            continue
        low = edges[i]
        high = edges[i + 1] - 1 if i + 1 < len(edges) else None
        span = f"{low}-{high}" if high is not None else f"{low}+"
        bar = "█" * max(1, round(40 * count / total))
        rows.append(f"| {span} | {count} | {count / total:.1%} | {bar} |")
    return ("| tokens | documents | share | |\n|---|---|---|---|\n" + "\n".join(rows)
            if rows else "(no documents)")


class TokenFileError(ValueError):
    """Token files cannot be written as asked (dtype too small, unknown format...)."""


def token_dtype(vocab_size: int, requested: str = "auto") -> np.dtype:
    """``auto``: the smallest unsigned dtype holding ids below ``vocab_size``; above 65,536,
    int32 (the formats have no uint32 code, and int32 holds every real vocabulary)."""
    if requested == "auto":
        if vocab_size <= 1 << 8:
            return np.dtype(np.uint8)
        if vocab_size <= 1 << 16:
            return np.dtype(np.uint16)
        return np.dtype(np.int32)
    try:
        dtype = np.dtype(requested)
    except TypeError as exc:
        raise TokenFileError(f"unknown token dtype {requested!r}") from exc
    if dtype not in DTYPE_CODES or dtype.kind not in "iu":
        raise TokenFileError(f"token dtype {requested!r} is not an integer dtype both formats "
                             f"define; use one of uint8, uint16, int32, int64")
    if vocab_size - 1 > np.iinfo(dtype).max:
        raise TokenFileError(f"a vocabulary of {vocab_size} ids does not fit {dtype.name} "
                             f"(max {np.iinfo(dtype).max}); choose a wider dtype or 'auto'")
    return dtype


@dataclass
class TokenizedShard:
    """What was written for one shard."""

    files: list[Path]
    documents: int = 0
    tokens: int = 0
    skipped_empty: int = 0
    dtype: str = ""
    histogram: list[int] = field(default_factory=lambda: [0] * len(HISTOGRAM_EDGES))

    def count(self, lengths: np.ndarray) -> None:
        self.documents += len(lengths)
        self.tokens += int(lengths.sum())
        bins = np.searchsorted(HISTOGRAM_EDGES, lengths, side="right") - 1
        for b, n in zip(*np.unique(np.clip(bins, 0, len(HISTOGRAM_EDGES) - 1),
                                   return_counts=True)):
            self.histogram[int(b)] += int(n)


class _StagedFiles:
    """Files written under temporary names in ``folder``, renamed into place together."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.staged: dict[Path, Path] = {}

    def open(self, name: str):
        return open(self.path(name), "wb")

    def path(self, name: str) -> Path:
        tmp = temp_file(self.folder / name)
        self.staged[self.folder / name] = tmp
        return tmp

    def commit(self) -> list[Path]:
        for final, tmp in self.staged.items():
            os.replace(tmp, final)
        return list(self.staged)

    def abort(self) -> None:
        for tmp in self.staged.values():
            tmp.unlink(missing_ok=True)


class _ParquetWriter:
    def __init__(self, files: _StagedFiles, shard: str, dtype: np.dtype):
        self.schema = pa.schema([("id", pa.string()),
                                 ("input_ids", pa.list_(pa.from_numpy_dtype(dtype))),
                                 ("n_tokens", pa.int64())])
        self.writer = pq.ParquetWriter(files.path(f"{shard}.parquet"), self.schema,
                                       compression="zstd")

    def add(self, ids: list[str], flat: np.ndarray, lengths: np.ndarray) -> None:
        offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
        self.writer.write_table(pa.table([pa.array(ids, pa.string()), lists,
                                          pa.array(lengths, pa.int64())], schema=self.schema))

    def close(self) -> None:
        self.writer.close()


class _MegatronWriter:
    def __init__(self, files: _StagedFiles, shard: str, dtype: np.dtype):
        self.dtype = dtype
        self.bin = files.open(f"{shard}.bin")
        self.idx_path = files.path(f"{shard}.idx")
        self.sizes: list[np.ndarray] = []

    def add(self, ids: list[str], flat: np.ndarray, lengths: np.ndarray) -> None:
        self.bin.write(flat.tobytes(order="C"))
        self.sizes.append(lengths.astype(np.int32))

    def close(self) -> None:
        self.bin.close()
        sizes = np.concatenate(self.sizes) if self.sizes else np.zeros(0, np.int32)
        pointers = np.zeros(len(sizes), dtype=np.int64)
        np.cumsum(sizes[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        doc_idx = np.arange(len(sizes) + 1, dtype=np.int64)
        with open(self.idx_path, "wb") as f:
            f.write(MEGATRON_MAGIC)
            f.write(struct.pack("<Q", 1))
            f.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
            f.write(struct.pack("<Q", len(sizes)))
            f.write(struct.pack("<Q", len(doc_idx)))
            f.write(sizes.tobytes(order="C"))
            f.write(pointers.tobytes(order="C"))
            f.write(doc_idx.tobytes(order="C"))


class _DocumentsWriter:
    def __init__(self, files: _StagedFiles, shard: str):
        self.writer = pq.ParquetWriter(files.path(f"{shard}{DOCUMENTS_SUFFIX}"),
                                       DOCUMENTS_SCHEMA, compression="zstd")

    def add(self, ids: list[str], hashes: Iterable[int], lengths: np.ndarray) -> None:
        self.writer.write_table(pa.table([pa.array(ids, pa.string()),
                                          pa.array(hashes, pa.uint64()),
                                          pa.array(lengths, pa.int64())],
                                         schema=DOCUMENTS_SCHEMA))

    def close(self) -> None:
        self.writer.close()


class _StreamWriter:
    def __init__(self, files: _StagedFiles, shard: str):
        self.out = files.open(f"{shard}.tokens")

    def add(self, ids: list[str], flat: np.ndarray, lengths: np.ndarray) -> None:
        self.out.write(flat.tobytes(order="C"))

    def close(self) -> None:
        self.out.close()


@dataclass
class PackedSet:
    """What :func:`pack_litgpt` wrote: the ``LITPKDS`` chunks (``files``) and, when asked, the
    litdata chunks and their ``index.json`` (``litdata_files``, the index last)."""

    files: list[Path]
    chunks: int = 0
    tokens: int = 0
    padding_tokens: int = 0
    litdata_files: list[Path] = field(default_factory=list)


def litdata_index(chunks: list[dict], dtype: np.dtype) -> dict:
    """litdata's ``index.json`` for chunks of tokens read with ``TokensLoader``."""
    return {"chunks": chunks, "config": {
        "chunk_bytes": None, "chunk_size": None, "compression": None,
        "data_format": [f"no_header_tensor:{LITDATA_DTYPES[np.dtype(dtype)]}"],
        "data_spec": json.dumps([1, {"type": None, "context": None, "children_spec": []}]),
        "encryption": None, "item_loader": "TokensLoader"}, "updated_at": "0"}


def pack_litgpt(streams: Iterable[BinaryIO], out_dir: str | os.PathLike, dtype: np.dtype, *,
                chunk_size: int = PROX_CHUNK_SIZE, sep_token: int, prefix: str = "train",
                block_tokens: int = 1 << 22, litdata: bool = False,
                on_chunk: Callable[[Path], None] | None = None) -> PackedSet:
    """Cut the token ``streams`` (open binary files of ``dtype`` ids, read in order, a block
    at a time) into litgpt chunk files in ``out_dir``; only the last chunk is padded. With
    ``litdata``, each chunk is also written as a litdata chunk, and ``index.json`` last.

    Each chunk is written atomically under its final name as soon as it is full, then handed
    to ``on_chunk``, which may move it elsewhere (an upload): a set for remote storage is never
    staged whole on local disk. On an error the chunks still in ``out_dir`` are removed; the
    caller names the folder by its content, so chunks it moved are never mistaken for a set."""
    if chunk_size < 1:
        raise TokenFileError(f"litgpt chunk_size must be positive, not {chunk_size}")
    dtype = np.dtype(dtype)
    out_dir = Path(out_dir)
    result = PackedSet(files=[])
    chunk = np.empty(chunk_size, dtype=dtype)
    used = 0

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(LITGPT_MAGIC + struct.pack("<Q", 1) + struct.pack("<B", DTYPE_CODES[dtype])
                    + struct.pack("<Q", chunk_size))
            f.write(chunk.tobytes(order="C"))

    index: list[dict] = []

    def write_litdata(tmp: Path, tokens: int) -> None:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<III", 1, 12, 12 + tokens * dtype.itemsize))
            f.write(chunk[:tokens].tobytes(order="C"))

    def flush(tokens: int) -> None:
        path = write_atomic(out_dir / f"{prefix}_{result.chunks:010d}.bin", write)
        result.files.append(path)
        done = [path]
        if litdata:
            name = f"chunk-0-{result.chunks}.bin"
            done.append(write_atomic(out_dir / name, lambda tmp: write_litdata(tmp, tokens)))
            result.litdata_files.append(done[-1])
            index.append({"chunk_bytes": 12 + tokens * dtype.itemsize, "chunk_size": 1,
                          "dim": tokens, "filename": name})
        result.chunks += 1
        for path in done if on_chunk is not None else ():
            on_chunk(path)

    try:
        for stream in streams:
            while data := stream.read(block_tokens * dtype.itemsize):
                if len(data) % dtype.itemsize:
                    raise TokenFileError(f"a token stream of {dtype.name} ids ends inside an "
                                         f"id ({len(data)} bytes read): the file is damaged")
                block = np.frombuffer(data, dtype=dtype)
                result.tokens += len(block)
                while len(block):
                    take = min(len(block), chunk_size - used)
                    chunk[used:used + take] = block[:take]
                    used += take
                    block = block[take:]
                    if used == chunk_size:
                        flush(used)
                        used = 0
        if used:
            chunk[used:] = sep_token
            result.padding_tokens = chunk_size - used
            flush(used)
        if litdata:  # last: a reader never finds an index naming a chunk not yet there
            text = json.dumps(litdata_index(index, dtype))
            result.litdata_files.append(write_atomic(out_dir / LITDATA_INDEX,
                                                     lambda tmp: tmp.write_text(text)))
            if on_chunk is not None:
                on_chunk(result.litdata_files[-1])
    except BaseException:
        for path in result.files + result.litdata_files:
            path.unlink(missing_ok=True)
        raise
    return result


READ_ROWS = 64  # rows read from the clean shard at a time: 64 long pages, not 1,024


def iter_kept_texts(clean_path, batch_size: int, max_chars: int = BATCH_CHARS
                    ) -> Iterator[tuple[list[str], list[str]]]:
    """(ids, texts) of kept documents (``clean_path``: a path or an open binary file), in
    order, at most ``batch_size`` documents and ``max_chars`` characters at a time (a longer
    document alone): four 4 MB pages are tokenized one by one, not together."""
    parquet = pq.ParquetFile(clean_path)
    ids: list[str] = []
    texts: list[str] = []
    chars = 0
    for batch in parquet.iter_batches(batch_size=min(batch_size, READ_ROWS),
                                      columns=["id", "text", "status"]):
        columns = batch.to_pydict()
        for doc_id, text, status in zip(columns["id"], columns["text"], columns["status"]):
            if status not in KEPT_STATUSES:
                continue
            text = text or ""
            if texts and (chars + len(text) > max_chars or len(texts) >= batch_size):
                yield ids, texts
                ids, texts, chars = [], [], 0
            ids.append(doc_id)
            texts.append(text)
            chars += len(text)
    if texts:
        yield ids, texts


def _encoded_batches(clean_path, batch_size: int, encode
                     ) -> Iterator[tuple[list[str], list[int], list]]:
    """(ids, text hashes, encodings) per batch; the next batch is read, hashed and tokenized in
    a thread (the Rust tokenizer and hashlib release the GIL) while the caller converts and
    writes this one."""
    batches = iter_kept_texts(clean_path, batch_size)

    def next_encoded():
        for ids, texts in batches:
            if texts:
                hashes = [text_hash(t) for t in texts]
                if len(texts) == 1 and len(texts[0]) > BATCH_CHARS:
                    return ids, hashes, [_long_ids(texts[0], encode)]
                return ids, hashes, [e.ids for e in encode(texts, add_special_tokens=False)]
        return None

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as pool:
        pending = pool.submit(next_encoded)
        while (batch := pending.result()) is not None:
            pending = pool.submit(next_encoded)
            yield batch


def _long_ids(text: str, encode) -> np.ndarray:
    """The ids of a text over :data:`BATCH_CHARS` (a page of 50 MB), tokenized in 64 KiB
    pieces cut where the tokenizer would not join them, a batch of pieces at a time: the
    encodings of a whole 51 MB line took 6 GB; its ids take 4 bytes a token."""
    parts, batch, chars = [], [], 0
    for piece in pieces(text, lone_space=True):
        batch.append(piece)
        chars += len(piece)
        if chars >= BATCH_CHARS:
            parts.extend(np.array(e.ids, np.uint32) for e in encode(batch,
                                                                   add_special_tokens=False))
            batch, chars = [], 0
    if batch:
        parts.extend(np.array(e.ids, np.uint32) for e in encode(batch, add_special_tokens=False))
    return np.concatenate(parts) if parts else np.zeros(0, np.uint32)


def _flat(kept: list, lengths: np.ndarray, eos: int, dtype: np.dtype) -> np.ndarray:
    """The documents' ids back to back in ``dtype``, EOS after each; OverflowError when an id
    does not fit it."""
    if any(isinstance(ids, np.ndarray) for _, _, ids in kept):  # a long page's, alone
        joined = np.concatenate([part for _, _, ids in kept
                                 for part in (np.asarray(ids, np.uint32), [eos])])
        if joined.size and int(joined.max()) > np.iinfo(dtype).max:
            raise OverflowError(f"id {int(joined.max())} does not fit {dtype.name}")
        return joined.astype(dtype)
    # one pass from the tokenizer's lists into the final dtype
    eos_list = [eos]
    return np.fromiter(chain.from_iterable(part for _, _, ids in kept
                                           for part in (ids, eos_list)),
                       dtype=dtype, count=int(lengths.sum()))


def write_token_files(clean_path, out_dir: str | os.PathLike, shard: str,
                      tokenizer, fmt: str, *, dtype: str = "auto", batch_size: int = 1024,
                      progress: Callable[[int], None] | None = None) -> TokenizedShard:
    """Tokenize the kept documents of a clean shard (a path or an open binary file) into the
    local folder ``out_dir`` in format ``fmt``.

    Empty texts, and texts that tokenize to nothing, are skipped and counted.
    """
    if fmt not in FORMATS:
        raise TokenFileError(f"unknown token format {fmt!r}; choose one of {FORMATS}")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise TokenFileError(f"tokenizer {tokenizer_name(tokenizer)!r} has no EOS token")
    np_dtype = token_dtype(len(tokenizer), dtype)
    stats = TokenizedShard(files=[], dtype=np_dtype.name)
    files = _StagedFiles(Path(out_dir))
    writer, documents = _writer(files, shard, fmt, np_dtype), _DocumentsWriter(files, shard)
    backend = rust_tokenizer(tokenizer)
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    with _committed(files, stats, writer, documents):
        for ids, hashes, encodings in _encoded_batches(clean_path, batch_size, encode):
            kept = [(doc_id, h, enc) for doc_id, h, enc in zip(ids, hashes, encodings)
                    if len(enc)]
            stats.skipped_empty += len(ids) - len(kept)
            if not kept:
                continue
            lengths = np.fromiter((len(enc) + 1 for _, _, enc in kept), dtype=np.int64,
                                  count=len(kept))
            try:
                flat = _flat(kept, lengths, eos, np_dtype)
            except OverflowError as exc:
                raise TokenFileError(
                    f"shard {shard!r}: a token id does not fit {np_dtype.name}; the "
                    f"tokenizer's ids exceed its vocabulary of {len(tokenizer)}") from exc
            kept_ids = [doc_id for doc_id, _, _ in kept]
            writer.add(kept_ids, flat, lengths)
            documents.add(kept_ids, [h for _, h, _ in kept], lengths)
            stats.count(lengths)
            if progress:
                progress(stats.documents)
    return stats


@contextlib.contextmanager
def _committed(files: _StagedFiles, stats: TokenizedShard, *writers) -> Iterator[None]:
    """Around a shard's writing: the writers closed and every file renamed into place (listed
    in ``stats.files``) when it ends; on any error, none of them."""
    try:
        yield
        for writer in writers:
            writer.close()
        stats.files = files.commit()
    except BaseException:
        files.abort()
        raise


def _writer(files: _StagedFiles, shard: str, fmt: str, dtype: np.dtype):
    if fmt == "litgpt":
        return _StreamWriter(files, shard)
    if fmt == "megatron":
        return _MegatronWriter(files, shard, dtype)
    return _ParquetWriter(files, shard, dtype)


TOKEN_SUFFIXES = {"parquet": ".parquet", "megatron": ".bin", "litgpt": ".tokens"}


def filter_token_files(open_file: Callable[[str], BinaryIO], shard: str, fmt: str, dtype: str,
                       drop: np.ndarray, out_dir: str | os.PathLike) -> TokenizedShard:
    """A copy of one shard's token files (``open_file(name)`` opens each of them and its
    documents file) without the documents whose positions ``drop`` marks (a boolean per
    document, in order), written to ``out_dir`` as the tokenizer stage writes them, a batch of
    documents at a time."""
    np_dtype = np.dtype(dtype)
    with open_file(f"{shard}{DOCUMENTS_SUFFIX}") as f:
        listed = pq.read_table(f)
    ids = listed["id"].to_pylist()
    hashes = listed["text_hash"].to_numpy()
    lengths = listed["n_tokens"].to_numpy()
    if len(drop) != len(ids):
        raise TokenFileError(f"shard {shard!r}: {len(drop)} documents to filter, but its "
                             f"documents file lists {len(ids)}")
    keep = ~drop
    stats = TokenizedShard(files=[], dtype=np_dtype.name)
    files = _StagedFiles(Path(out_dir))
    writer, documents = _writer(files, shard, fmt, np_dtype), _DocumentsWriter(files, shard)

    def emit(start: int, flat: np.ndarray, sizes: np.ndarray) -> None:
        chosen = keep[start:start + len(sizes)]
        if not chosen.any():
            return
        kept_ids = [doc_id for doc_id, k in zip(ids[start:start + len(sizes)], chosen) if k]
        writer.add(kept_ids, flat[np.repeat(chosen, sizes)], sizes[chosen])
        documents.add(kept_ids, hashes[start:start + len(sizes)][chosen].tolist(),
                      sizes[chosen])
        stats.count(sizes[chosen])

    with _committed(files, stats, writer, documents):
        with open_file(f"{shard}{TOKEN_SUFFIXES[fmt]}") as source:
            if fmt == "parquet":
                start = 0
                for batch in pq.ParquetFile(source).iter_batches(
                        batch_size=FILTER_DOCUMENTS, columns=["input_ids"]):
                    column = batch.column(0)
                    sizes = column.value_lengths().to_numpy().astype(np.int64)
                    emit(start, column.flatten().to_numpy(zero_copy_only=False), sizes)
                    start += len(sizes)
            else:  # megatron's .bin and litgpt's stream: the documents back to back
                for start in range(0, len(lengths), FILTER_DOCUMENTS):
                    sizes = lengths[start:start + FILTER_DOCUMENTS]
                    need = int(sizes.sum()) * np_dtype.itemsize
                    data = source.read(need)
                    if len(data) != need:
                        raise TokenFileError(f"shard {shard!r}: its token file ends before "
                                             "the documents its documents file lists")
                    emit(start, np.frombuffer(data, dtype=np_dtype), sizes)
    return stats
