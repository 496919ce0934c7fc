"""The stages of the shard pipeline as plain functions over record batches.

Each stage reads a batch at a time from a source (``ParquetSource``, ``FrameSource``) and writes
to a sink (``BatchWriter``, ``FrameSink``), so a step's memory does not grow with its shard; the
assets call the ``*_stream`` forms, the evaluation and tests the frame forms, which run the same
code. Every row given is kept (a dropped document stays, flagged).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import polars as pl

from .checkpoints import BatchCheckpoints
from .chunking import DEFAULT_MAX_TOKENS, chunk_documents, strip_numbers
from .execute import ExecutionPolicy, decide_document, execute_document
from .parquet_batches import READ_BATCH_ROWS, FrameSink, FrameSource
from .preview import PreviewCollector
from .quality import RETENTION_DOCUMENT_CAP
from .untrusted import program_text
from .programs import parse_program, removed_lines_by_kind
from .prompts import chunk_prompt, doc_prompt
from .quality import ProgramCoverage
from .refiners.base import Refiner
from .shards import SCHEMAS
from .tokenization import token_counts

Progress = Callable[[int, int], None]
DEFAULT_BATCH = 256


class Source(Protocol):
    rows: int

    def batches(self, columns: list[str] | None = None,
                rows: int = READ_BATCH_ROWS) -> Iterator[pl.DataFrame]: ...


class Sink(Protocol):
    def write(self, frame: pl.DataFrame) -> None: ...


def refiner_batch_rows(batch_size: int) -> int:
    """Record batches a whole number of refiner batches long, so that prompts are batched (and
    checkpointed) as they would be over the whole shard at once."""
    return max(1, -(-READ_BATCH_ROWS // max(1, batch_size))) * max(1, batch_size)


def _generate(refiner: Refiner, prompts: Sequence[str], level: str, batch_size: int,
              progress: Callable[[int], None] | None,
              checkpoints: BatchCheckpoints | None) -> list[str]:
    outputs: list[str] = []
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i:i + batch_size]
        result = checkpoints.load(refiner.version, level, batch) if checkpoints else None
        if result is None:
            result = refiner.generate(batch, level=level)
            if len(result) != len(batch):
                raise RuntimeError(f"refiner {refiner.version} returned {len(result)} programs "
                                   f"for {len(batch)} {level} prompts")
            result = [program_text(output) for output in result]
            if checkpoints:
                checkpoints.save(refiner.version, level, batch, result)
        outputs.extend(result)
        if progress:
            progress(len(batch))
    return outputs


class _Counted:
    """Progress over a whole shard from per-batch counts."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total)


def observe_shard(refiner: Refiner, documents: Iterable[str]) -> None:
    """Refiners that use shard-level signals (lines repeated across the shard's documents) see
    every document of the shard first, whatever the batch size (a stream: one pass)."""
    observe = getattr(refiner, "observe_shard", None)
    if observe is not None:
        observe(documents)


def _texts(source: Source, column: str) -> Iterator[str]:
    for batch in source.batches([column]):
        yield from batch[column]


def refine_documents_stream(source: Source, sink: Sink, refiner: Refiner, *,
                            batch_size: int = DEFAULT_BATCH,
                            progress: Progress | None = None,
                            checkpoints: BatchCheckpoints | None = None) -> pl.DataFrame:
    """``raw_shard`` -> ``doc_refined_shard``: a doc-level program per document and its verdict
    ``doc_keep`` (kept unless the program parses to a ``drop_doc()`` call: the documents that
    are chunked). The execution policy's decision is taken when the programs run
    (``clean_shard``); its reference mode drops only documents this verdict drops too, so no
    policy needs programs this stage did not write. Each batch's programs are checkpointed in
    ``checkpoints``, and taken from there if present. Returns the ``doc_parse_ok`` and
    ``doc_keep`` columns (two bytes a document) for the checks."""
    observe_shard(refiner, _texts(source, "text"))
    counted = _Counted(progress, source.rows)
    flags = []
    for raw in source.batches(rows=refiner_batch_rows(batch_size)):
        prompts = [doc_prompt(text, refiner.tokenizer, refiner.max_doc_prompt_tokens)
                   for text in raw["text"]]
        programs = _generate(refiner, prompts, "doc", batch_size, counted, checkpoints)
        decisions = [decide_document(p) for p in programs]
        refined = raw.with_columns(
            pl.Series("doc_program", programs, dtype=pl.String),
            pl.Series("doc_parse_ok", [parsed.ok for _, parsed in decisions], dtype=pl.Boolean),
            pl.Series("doc_keep", [keep for keep, _ in decisions], dtype=pl.Boolean),
            pl.lit(refiner.version, dtype=pl.String).alias("refiner_version"),
        )
        sink.write(refined)
        flags.append(refined.select("doc_parse_ok", "doc_keep"))
    return pl.concat(flags)


def refine_documents(raw: pl.DataFrame, refiner: Refiner, *, batch_size: int = DEFAULT_BATCH,
                     progress: Progress | None = None,
                     checkpoints: BatchCheckpoints | None = None) -> pl.DataFrame:
    """:func:`refine_documents_stream` over a frame."""
    sink = FrameSink()
    refine_documents_stream(FrameSource(raw), sink, refiner, batch_size=batch_size,
                            progress=progress, checkpoints=checkpoints)
    return sink.frame


@dataclass
class ChunkStats:
    docs_chunked: int = 0
    chunks: int = 0
    chunk_tokens: int = 0
    truncated: int = 0


def chunk_stream(source: Source, sink: Sink, tokenizer,
                 max_tokens: int = DEFAULT_MAX_TOKENS) -> ChunkStats:
    """``doc_refined_shard`` -> ``chunked_shard``: numbered chunks of every kept document."""
    stats = ChunkStats()
    for docs in source.batches(["id", "text", "doc_keep"]):
        kept = docs.filter(pl.col("doc_keep"))
        chunked = chunk_documents(kept["text"].to_list(), tokenizer, max_tokens)
        cols: dict[str, list] = {c: [] for c in SCHEMAS["chunked_shard"]}
        for doc_id, chunks in zip(kept["id"], chunked):
            for index, chunk in enumerate(chunks):
                cols["doc_id"].append(doc_id)
                cols["chunk_index"].append(index)
                cols["line_start"].append(chunk.line_start)
                cols["line_end"].append(chunk.line_end)
                cols["chunk_text"].append(chunk.text)
                cols["n_tokens"].append(chunk.n_tokens)
                cols["truncated"].append(chunk.truncated)
        frame = pl.DataFrame(cols, schema=SCHEMAS["chunked_shard"])
        sink.write(frame)
        stats.docs_chunked += kept.height
        stats.chunks += frame.height
        stats.chunk_tokens += int(frame["n_tokens"].sum() or 0)
        stats.truncated += int(frame["truncated"].sum() or 0)
    return stats


def chunk_shard(doc_refined: pl.DataFrame, tokenizer,
                max_tokens: int = DEFAULT_MAX_TOKENS) -> pl.DataFrame:
    """:func:`chunk_stream` over a frame."""
    sink = FrameSink(SCHEMAS["chunked_shard"])
    chunk_stream(FrameSource(doc_refined), sink, tokenizer, max_tokens)
    return sink.frame


def _chunk_documents(source: Source) -> Iterator[str]:
    """The documents of a chunked shard, put back together from their chunks (a document's
    chunks are consecutive rows: one held at a time)."""
    current, parts = None, []
    for batch in source.batches(["doc_id", "chunk_text"]):
        for doc_id, text in batch.iter_rows():
            if doc_id != current and parts:
                yield "\n".join(parts)
                parts = []
            current = doc_id
            parts.append(strip_numbers(text))
    if parts:
        yield "\n".join(parts)


def refine_chunks_stream(source: Source, sink: Sink, refiner: Refiner, *,
                         batch_size: int = DEFAULT_BATCH, progress: Progress | None = None,
                         checkpoints: BatchCheckpoints | None = None,
                         removed_by_kind: dict[str, int] | None = None) -> pl.Series:
    """``chunked_shard`` -> ``chunk_refined_shard``: a chunk-level program per chunk (batches
    checkpointed as in :func:`refine_documents_stream`). Returns ``chunk_parse_ok``; adds the
    lines the programs remove, per line kind they name, to ``removed_by_kind``."""
    observe_shard(refiner, _chunk_documents(source))
    counted = _Counted(progress, source.rows)
    parsed_ok = []
    for chunked in source.batches(rows=refiner_batch_rows(batch_size)):
        prompts = [chunk_prompt(text, refiner.tokenizer) for text in chunked["chunk_text"]]
        programs = _generate(refiner, prompts, "chunk", batch_size, counted, checkpoints)
        refined = chunked.with_columns(
            pl.Series("chunk_program", programs, dtype=pl.String),
            pl.Series("chunk_parse_ok",
                      [parse_program(p, "chunk", refiner.dialect).ok for p in programs],
                      dtype=pl.Boolean),
            pl.lit(refiner.dialect, dtype=pl.String).alias("program_dialect"),
            pl.lit(refiner.version, dtype=pl.String).alias("refiner_version"),
        )
        sink.write(refined)
        parsed_ok.append(refined["chunk_parse_ok"])
        if removed_by_kind is not None:
            for program in programs:
                removed_lines_by_kind(program, removed_by_kind)
    return pl.concat(parsed_ok)


def refine_chunks(chunked: pl.DataFrame, refiner: Refiner, *, batch_size: int = DEFAULT_BATCH,
                  progress: Progress | None = None,
                  checkpoints: BatchCheckpoints | None = None) -> pl.DataFrame:
    """:func:`refine_chunks_stream` over a frame."""
    sink = FrameSink()
    refine_chunks_stream(FrameSource(chunked), sink, refiner, batch_size=batch_size,
                         progress=progress, checkpoints=checkpoints)
    return sink.frame


@dataclass
class ExecutionSummary:
    """What executing a shard's programs gave, for metadata and checks."""

    statuses: Counter = field(default_factory=Counter)
    tokens_in: int = 0
    tokens_out: int = 0
    # each document weighing at most RETENTION_DOCUMENT_CAP tokens, and the documents over it
    weighted_in: float = 0.0
    weighted_out: float = 0.0
    outliers: list[dict] = field(default_factory=list)
    n_ops: int = 0
    n_errors: int = 0
    coverage: ProgramCoverage = field(default_factory=ProgramCoverage)
    preview: PreviewCollector = field(default_factory=PreviewCollector)


class _ChunkGroups:
    """The chunk programs of a chunk_refined shard, one document's at a time, in file order;
    ``versions``: the refiner versions of the rows read so far (all, once the groups ran out)."""

    def __init__(self, source: Source):
        self.versions: set[str] = set()
        self._rows = self._iter(source)
        self.head = next(self._rows, None)

    def _iter(self, source: Source) -> Iterator[tuple[str, list[tuple[int, int, int, str]]]]:
        current, group = None, []
        for batch in source.batches(["doc_id", "chunk_index", "line_start", "line_end",
                                     "chunk_program", "refiner_version"]):
            self.versions.update(batch["refiner_version"].unique().to_list())
            for doc_id, index, start, end, program, _ in batch.iter_rows():
                if doc_id != current and group:
                    yield current, group
                    group = []
                current = doc_id
                group.append((index, start, end, program))
        if group:
            yield current, group

    def advance(self) -> None:
        self.head = next(self._rows, None)


def _shard_dialect(chunk_source: Source) -> str:
    dialects: set[str] = set()
    for batch in chunk_source.batches(["program_dialect"]):
        dialects.update(batch["program_dialect"].unique().to_list())
    return dialects.pop() if len(dialects) == 1 else "prox"


def execute_stream(doc_source: Source, chunk_source: Source, sink: Sink, tokenizer,
                   policy: ExecutionPolicy | None = None) -> ExecutionSummary:
    """Doc + chunk programs -> ``clean_shard``: the refined text and status of every document.

    The two shards are read side by side: a document's chunk programs are the consecutive rows
    of chunk_refined with its id, in document order (as ``chunked_shard`` writes them). Chunk
    programs that do not line up with a kept document of doc_refined (another decision, another
    order, another shard) are not applied; the returned ``coverage`` counts them for the
    ``programs_match_documents`` check."""
    dialect = _shard_dialect(chunk_source)
    position: dict[str, int] = {}
    for batch in doc_source.batches(["id"]):
        for doc_id in batch["id"]:
            position.setdefault(doc_id, len(position))
    groups = _ChunkGroups(chunk_source)
    summary = ExecutionSummary()
    carried_names = ("id", "url", "source", "meta", "refiner_version")
    for docs in doc_source.batches():
        texts, statuses, n_ops, n_errors = [], [], [], []
        applied: dict[str, list[tuple[int, int, str]]] = {}
        for doc_id, text, doc_program, keep, version in docs.select(
                "id", "text", "doc_program", "doc_keep", "refiner_version").iter_rows():
            here = position[doc_id]
            while groups.head is not None and position.get(groups.head[0], -1) < here:
                summary.coverage.programs_without_document(groups.head[0])
                groups.advance()
            programs: list[tuple[int, int, str]] = []
            if groups.head is not None and groups.head[0] == doc_id:
                programs = [(s, e, p) for _, s, e, p in sorted(groups.head[1])]
                groups.advance()
            summary.coverage.document(doc_id, keep, text, bool(programs), version)
            if not keep:
                programs = []  # the doc decision rules; the check above reports the mismatch
            applied[doc_id] = programs
            result = execute_document(text, doc_program, programs, policy, dialect=dialect)
            texts.append(result.text)
            statuses.append(result.status)
            n_ops.append(result.n_ops)
            n_errors.append(result.n_errors)
        carried = [c for c in carried_names if c in docs.columns]
        clean = docs.select(carried).with_columns(
            pl.Series("text", texts, dtype=pl.String),
            pl.Series("status", statuses, dtype=pl.String),
            pl.Series("n_ops", n_ops, dtype=pl.Int32),
            pl.Series("n_errors", n_errors, dtype=pl.Int32),
            pl.Series("tokens_in", token_counts(tokenizer, docs["text"].to_list()),
                      dtype=pl.Int64),
            pl.Series("tokens_out", token_counts(tokenizer, texts), dtype=pl.Int64),
        )
        sink.write(clean)
        summary.statuses.update(statuses)
        summary.tokens_in += int(clean["tokens_in"].sum() or 0)
        summary.tokens_out += int(clean["tokens_out"].sum() or 0)
        _weigh(summary, clean.select("id", "tokens_in", "tokens_out", "status"))
        summary.n_ops += sum(n_ops)
        summary.n_errors += sum(n_errors)
        summary.preview.add(docs, applied, clean)
    while groups.head is not None:
        summary.coverage.programs_without_document(groups.head[0])
        groups.advance()
    summary.coverage.versions.update(groups.versions)
    return summary


MAX_OUTLIERS = 5  # the largest documents over the cap, named in the retention check


def _weigh(summary: ExecutionSummary, counts: pl.DataFrame) -> None:
    """Add a batch's documents to the shard's weighted token retention (see
    ``quality.token_retention``)."""
    weight = pl.min_horizontal(pl.col("tokens_in"), RETENTION_DOCUMENT_CAP).cast(pl.Float64)
    sums = counts.filter(pl.col("tokens_in") > 0).select(
        weight.sum().alias("in"),
        (weight * pl.col("tokens_out") / pl.col("tokens_in")).sum().alias("out"))
    summary.weighted_in += float(sums["in"][0] or 0.0)
    summary.weighted_out += float(sums["out"][0] or 0.0)
    over = counts.filter(pl.col("tokens_in") > RETENTION_DOCUMENT_CAP)
    if over.height:
        summary.outliers = sorted(summary.outliers + over.to_dicts(),
                                  key=lambda d: -d["tokens_in"])[:MAX_OUTLIERS]


def execute_shard(doc_refined: pl.DataFrame, chunk_refined: pl.DataFrame, tokenizer,
                  policy: ExecutionPolicy | None = None) -> pl.DataFrame:
    """:func:`execute_stream` over frames."""
    sink = FrameSink()
    execute_stream(FrameSource(doc_refined), FrameSource(chunk_refined), sink, tokenizer,
                   policy)
    return sink.frame
