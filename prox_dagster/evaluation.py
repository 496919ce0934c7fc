"""How good a refiner's output is, measured on labelled web pages through the real pipeline.

A labelled set (JSONL: ``text`` with ``line_labels``/``line_labels_derived`` and/or a document
``label``) runs as one shard through the stage functions the assets call; a line counts as kept
when it survives into the refined text. The naive line filter is scored beside it, and recall is
split by line kind and shape. Details: ``docs/quality.md``.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from .chunking import DEFAULT_MAX_TOKENS
from .execute import ExecutionPolicy, kept_lines
from .local_files import NotRegularFile, open_regular
from .pipeline import chunk_shard, execute_shard, refine_chunks, refine_documents
from .refiners.base import Refiner
from .refiners.kinds import KINDS, KNOWN_LETTERS, LETTER_KINDS, LIST, MAIN, MARKUP, NOISE
from .refiners.markup import is_markup
from .words import sentence_like, word_count

CONTENT_LABELS = frozenset("M1")
IGNORED_LABELS = frozenset("_")
KEPT_STATUSES = ("kept", "fallback_raw")
NAIVE = "naive_filter"


class EvaluationError(ValueError):
    """A labelled set that cannot be scored at all (missing, unreadable, no labels)."""


@dataclass
class LabelledDocument:
    id: str
    text: str
    url: str | None
    line_labels: str | None
    label: int | None
    page_type: str | None = None    # what a breakdown of the scores by kind of page groups on
    lang: str | None = None


@dataclass
class LabelledSet:
    name: str
    path: str
    documents: list[LabelledDocument]
    skipped: list[dict] = field(default_factory=list)  # {"id", "reason"}: reported, not scored
    notes: list[str] = field(default_factory=list)     # what is scored other than it says

    @property
    def has_line_labels(self) -> bool:
        return any(d.line_labels is not None for d in self.documents)

    @property
    def has_doc_labels(self) -> bool:
        return any(d.label is not None for d in self.documents)


def _optional_str(value) -> str | None:
    return None if value is None else str(value)


def load_labelled_set(path: str | Path, name: str | None = None) -> LabelledSet:
    """Read a labelled set; an unreadable file or one without any label is an error naming it."""
    path = Path(path)
    file = path / "docs.jsonl" if path.is_dir() else path
    try:  # a file the folder holds may be a link only within the folder; none may be a FIFO
        binary = open_regular(file, "labelled set", follow_links=True,
                              inside=path if path.is_dir() else None)
    except FileNotFoundError:
        raise EvaluationError(f"labelled set {str(path)!r}: no such file (expected a JSONL file "
                              "or a folder holding docs.jsonl)") from None
    except NotRegularFile as exc:
        raise EvaluationError(str(exc)) from None
    name = name or (path.name if path.is_dir() else file.name.removesuffix(".jsonl"))
    documents: list[LabelledDocument] = []
    skipped: list[dict] = []
    seen: set[str] = set()
    with io.TextIOWrapper(binary, encoding="utf-8", errors="replace") as handle:
        for line_no, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                skipped.append({"id": f"line {line_no}", "reason": f"not JSON: {exc}"})
                continue
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                skipped.append({"id": f"line {line_no}", "reason": "no string 'text'"})
                continue
            doc_id = str(record.get("id") or f"{name}:{line_no}")
            if doc_id in seen:
                doc_id = f"{doc_id}#{line_no}"
            seen.add(doc_id)
            text = record["text"]
            labels = record.get("line_labels") or record.get("line_labels_derived")
            if labels is not None and (not isinstance(labels, str)
                                       or len(labels) != text.count("\n") + 1):
                skipped.append({"id": doc_id, "reason": (
                    f"line labels of length {len(labels) if isinstance(labels, str) else '?'} "
                    f"for {text.count(chr(10)) + 1} lines: line labels not scored")})
                labels = None
            label = record.get("label")
            label = int(label) if isinstance(label, (bool, int, float)) and label in (0, 1) \
                else None
            documents.append(LabelledDocument(doc_id, text, record.get("url"), labels, label,
                                              _optional_str(record.get("page_type")),
                                              _optional_str(record.get("lang"))))
    letters = set().union(*(d.line_labels for d in documents if d.line_labels is not None))
    unknown = sorted(letters - KNOWN_LETTERS)
    notes = [] if not unknown else [
        f"line labels use {', '.join(map(repr, unknown))}, which name no line kind (known: "
        f"{''.join(sorted(KNOWN_LETTERS))}): scored as binary, M and 1 content and every other "
        f"letter noise, and those lines are counted as kind 'noise'"]
    result = LabelledSet(name, str(file), documents, skipped, notes)
    if not result.has_line_labels and not result.has_doc_labels:
        raise EvaluationError(
            f"labelled set {str(file)!r} ({name}): no document has line labels (line_labels / "
            "line_labels_derived, one character per line) or a document label (label: 0/1)")
    return result


# ---------------------------------------------------------------------------------------------
# scoring

@dataclass
class Counts:
    """Line counts (content kept / noise kept / content removed / noise removed) and document
    counts (good kept / bad kept / good dropped / bad dropped)."""

    content_kept: int = 0
    noise_kept: int = 0
    content_removed: int = 0
    noise_removed: int = 0
    content_in_dropped_docs: int = 0
    sentences_kept: int = 0         # content lines that are sentence-like (of content_kept)
    sentences_removed: int = 0      # ... and of content_removed
    good_kept: int = 0
    bad_kept: int = 0
    good_dropped: int = 0
    bad_dropped: int = 0
    docs: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    # per kind of labelled line (its letter's kind, main / list by shape, markup by the
    # detector): [lines kept, lines]
    kinds: dict = field(default_factory=dict)

    def add(self, other: "Counts") -> None:
        for name, value in asdict(other).items():
            if name == "kinds":
                for kind, (kept, lines) in value.items():
                    mine = self.kinds.setdefault(kind, [0, 0])
                    mine[0] += kept
                    mine[1] += lines
            else:
                setattr(self, name, getattr(self, name) + value)

    def metrics(self) -> dict:
        def ratio(a: float, b: float) -> float | None:
            return round(a / b, 4) if b else None

        def f1(p: float | None, r: float | None) -> float | None:
            return round(2 * p * r / (p + r), 4) if p and r else (0.0 if p is not None
                                                                   and r is not None else None)

        lines = self.content_kept + self.noise_kept + self.content_removed + self.noise_removed
        keep_p = ratio(self.content_kept, self.content_kept + self.noise_kept)
        keep_r = ratio(self.content_kept, self.content_kept + self.content_removed)
        short_kept = self.content_kept - self.sentences_kept
        short_removed = self.content_removed - self.sentences_removed
        noise_p = ratio(self.noise_removed, self.noise_removed + self.content_removed)
        noise_r = ratio(self.noise_removed, self.noise_removed + self.noise_kept)
        good = self.good_kept + self.good_dropped
        bad = self.bad_kept + self.bad_dropped
        doc_p = ratio(self.good_kept, self.good_kept + self.bad_kept)
        doc_r = ratio(self.good_kept, good)
        return {
            "docs": self.docs, "lines": lines,
            "keep_precision": keep_p, "keep_recall": keep_r, "keep_f1": f1(keep_p, keep_r),
            "sentence_recall": ratio(self.sentences_kept,
                                     self.sentences_kept + self.sentences_removed),
            "short_line_recall": ratio(short_kept, short_kept + short_removed),
            "noise_f1": f1(noise_p, noise_r),
            "content_lost_to_doc_drops": ratio(self.content_in_dropped_docs,
                                               self.content_kept + self.content_removed),
            "labelled_docs": good + bad,
            "doc_keep_precision": doc_p, "doc_keep_recall": doc_r, "doc_keep_f1": f1(doc_p, doc_r),
            "bad_dropped": ratio(self.bad_dropped, bad), "good_dropped": ratio(self.good_dropped,
                                                                               good),
            "token_retention": ratio(self.tokens_out, self.tokens_in),
            "docs_per_s": round(self.docs / self.seconds, 1) if self.seconds else None,
            # the share of each kind's lines kept: recall for main content and lists, what
            # leaks through for the others
            "kept_by_kind": {kind: ratio(*self.kinds[kind]) for kind in sorted(self.kinds)},
            "markup_share_of_kept": ratio(self.kinds.get(MARKUP, [0, 0])[0],
                                          self.content_kept + self.noise_kept),
        }


def naive_keep(line: str) -> bool:
    """The two-line filter every refiner must beat."""
    return sentence_like(line, "split")


def score_document(doc: LabelledDocument, kept: Sequence[bool], dropped: bool,
                   counts: Counts) -> None:
    if doc.line_labels is not None:
        lines = doc.text.split("\n")
        for line, label, keep in zip(lines, doc.line_labels, kept):
            if not line.strip() or label in IGNORED_LABELS:
                continue
            content = label in CONTENT_LABELS
            keep = keep and not dropped
            sentence = content and sentence_like(line, "cjk")
            kind = MARKUP if is_markup(line) else (MAIN if sentence else LIST) if content \
                else LETTER_KINDS.get(label, NOISE)
            tally = counts.kinds.setdefault(kind, [0, 0])
            tally[0] += keep
            tally[1] += 1
            if content and dropped:
                counts.content_in_dropped_docs += 1
            if content:
                if keep:
                    counts.content_kept += 1
                    counts.sentences_kept += sentence
                else:
                    counts.content_removed += 1
                    counts.sentences_removed += sentence
            elif keep:
                counts.noise_kept += 1
            else:
                counts.noise_removed += 1
    if doc.label is not None:
        if doc.label == 1:
            counts.good_dropped += dropped
            counts.good_kept += not dropped
        else:
            counts.bad_dropped += dropped
            counts.bad_kept += not dropped


def _raw_frame(labelled: LabelledSet) -> pl.DataFrame:
    docs = labelled.documents
    return pl.DataFrame({
        "id": [d.id for d in docs], "text": [d.text for d in docs],
        "url": [d.url for d in docs], "source": [labelled.name] * len(docs),
        "meta": ["{}"] * len(docs),
    }, schema={"id": pl.String, "text": pl.String, "url": pl.String, "source": pl.String,
               "meta": pl.String})


def refine_set(labelled: LabelledSet, refiner: Refiner, tokenizer, *,
               max_tokens: int = DEFAULT_MAX_TOKENS,
               policy: ExecutionPolicy | None = None) -> tuple[pl.DataFrame, float]:
    """Run the set as one shard through the pipeline's stages; the clean frame and seconds."""
    started = time.perf_counter()
    raw = _raw_frame(labelled)
    doc_refined = refine_documents(raw, refiner)
    chunked = chunk_shard(doc_refined, tokenizer, max_tokens)
    chunk_refined = refine_chunks(chunked, refiner)
    clean = execute_shard(doc_refined, chunk_refined, tokenizer, policy)
    return clean, time.perf_counter() - started


def naive_filter(text: str, policy: ExecutionPolicy) -> tuple[list[bool], bool]:
    """The naive filter on one document: which lines it keeps, and whether it drops the
    document (no more than ``policy.min_words`` words kept)."""
    lines = text.split("\n")
    kept = [naive_keep(line) for line in lines]
    words = sum(word_count(line, policy.word_unit) for line, k in zip(lines, kept) if k)
    return kept, words <= policy.min_words


def naive_text(text: str, policy: ExecutionPolicy) -> str | None:
    """What the naive filter leaves of a document, or None when it drops it."""
    kept, dropped = naive_filter(text, policy)
    return None if dropped else "\n".join(
        line for line, k in zip(text.split("\n"), kept) if k)


def naive_counts(labelled: LabelledSet, policy: ExecutionPolicy | None = None) -> Counts:
    policy = policy or ExecutionPolicy()
    counts = Counts(docs=len(labelled.documents))
    started = time.perf_counter()
    for doc in labelled.documents:
        kept, dropped = naive_filter(doc.text, policy)
        score_document(doc, kept, dropped, counts)
    counts.seconds = time.perf_counter() - started
    return counts


def refiner_counts(labelled: LabelledSet, clean: pl.DataFrame, seconds: float) -> Counts:
    counts = Counts(docs=len(labelled.documents), seconds=seconds,
                    tokens_in=int(clean["tokens_in"].sum()),
                    tokens_out=int(clean["tokens_out"].sum()))
    by_id = {row[0]: row[1:] for row in clean.select("id", "text", "status").iter_rows()}
    for doc in labelled.documents:
        text, status = by_id[doc.id]
        dropped = status not in KEPT_STATUSES
        score_document(doc, kept_lines(doc.text, text or ""), dropped, counts)
    return counts


@dataclass
class Evaluation:
    refiner_version: str
    refiner_backend: str
    sets: list[dict]        # {"set", "path", "docs", "skipped", "refiner": metrics, NAIVE: metrics}
    overall: dict           # {"refiner": metrics, NAIVE: metrics}
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)

    def rows(self) -> list[dict]:
        """One row per set and system, plus the overall rows (what the table and CSV show)."""
        rows = []
        for entry in [*self.sets, {"set": "overall", **self.overall}]:
            for system in ("refiner", NAIVE):
                metrics = entry[system]
                rows.append({"set": entry["set"], "system": system if system == NAIVE
                             else self.refiner_backend, **metrics,
                             **{f"kept_{kind}": share for kind, share
                                in metrics.get("kept_by_kind", {}).items()}})
        return rows


METRIC_COLUMNS = ["docs", "lines", "keep_precision", "keep_recall", "keep_f1", "sentence_recall",
                  "short_line_recall", "noise_f1",
                  "content_lost_to_doc_drops", "labelled_docs", "doc_keep_precision",
                  "doc_keep_recall", "doc_keep_f1", "bad_dropped", "good_dropped",
                  "token_retention", "docs_per_s", "markup_share_of_kept",
                  *(f"kept_{kind}" for kind in (*KINDS, NOISE))]
CSV_COLUMNS = ["set", "system", *METRIC_COLUMNS]


def evaluate(sets: Sequence[LabelledSet], refiner: Refiner, tokenizer, *,
             max_tokens: int = DEFAULT_MAX_TOKENS, policy: ExecutionPolicy | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> Evaluation:
    """Score ``refiner`` (and the naive filter) on every set, per set and overall."""
    started = time.perf_counter()
    totals = {"refiner": Counts(), NAIVE: Counts()}
    entries = []
    for position, labelled in enumerate(sets, 1):
        if progress:
            progress(labelled.name, position, len(sets))
        clean, seconds = refine_set(labelled, refiner, tokenizer, max_tokens=max_tokens,
                                    policy=policy)
        systems = {"refiner": refiner_counts(labelled, clean, seconds),
                   NAIVE: naive_counts(labelled, policy)}
        for system, counts in systems.items():
            totals[system].add(counts)
        entries.append({"set": labelled.name, "path": labelled.path,
                        "docs": len(labelled.documents), "skipped": labelled.skipped,
                        "notes": labelled.notes,
                        **{system: counts.metrics() for system, counts in systems.items()},
                        "by_page_type": {
                            kind: {"docs": len(entry.pop("documents")), **entry}
                            for kind, entry in breakdown(labelled, clean, lambda d: d.page_type,
                                                         policy).items()}})
    return Evaluation(refiner.version, refiner.backend, entries,
                      {system: counts.metrics() for system, counts in totals.items()},
                      round(time.perf_counter() - started, 3))


def breakdown(labelled: LabelledSet, clean: pl.DataFrame,
              kind_of: Callable[[LabelledDocument], str | None],
              policy: ExecutionPolicy | None = None, min_kinds: int = 2) -> dict:
    """The refiner's and the naive filter's scores on each kind of page of a set (``kind_of``
    a document; ``None``: not counted), from the same run: every page was refined with the
    whole set as its shard. Empty when fewer than ``min_kinds`` kinds occur."""
    groups: dict[str, list[LabelledDocument]] = {}
    for doc in labelled.documents:
        kind = kind_of(doc)
        if kind is not None:
            groups.setdefault(kind, []).append(doc)
    if len(groups) < min_kinds:
        return {}
    out = {}
    for kind in sorted(groups):
        subset = LabelledSet(f"{labelled.name}[{kind}]", labelled.path, groups[kind])
        ids = pl.Series([d.id for d in subset.documents], dtype=pl.String)
        out[kind] = {
            "documents": subset.documents,
            "refiner": refiner_counts(subset, clean.filter(pl.col("id").is_in(ids)),
                                      0.0).metrics(),
            NAIVE: naive_counts(subset, policy).metrics()}
    return out


def evaluation_csv(evaluation: Evaluation) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(evaluation.rows())
    return out.getvalue()


def _cell(value, column: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if column == "docs_per_s" else f"{value:.3f}"
    return str(value)


# What the table shows, as three tables of a few columns each: title, what its rows score, and
# its columns after set and system (metric, header). One table of every column left an 80- to
# 120-column terminal no room for a single digit.
TABLES = [
    ("lines", "content lines kept (precision, recall, F1), recall of the content lines that are "
              "sentences and of the short ones, noise F1, content lost to document drops; on "
              "the sets with line labels",
     [("keep_precision", "precision"), ("keep_recall", "recall"), ("keep_f1", "F1"),
      ("sentence_recall", "sentence recall"), ("short_line_recall", "short line recall"),
      ("noise_f1", "noise F1"),
      ("content_lost_to_doc_drops", "lost to doc drops")]),
    ("documents", "good documents kept (precision, recall, F1), share of the bad and of the "
                  "good documents dropped; on the sets with document labels",
     [("labelled_docs", "docs"), ("doc_keep_precision", "precision"),
      ("doc_keep_recall", "recall"), ("doc_keep_f1", "F1"), ("bad_dropped", "bad dropped"),
      ("good_dropped", "good dropped")]),
    ("cost", "share of the tokens kept, and documents per second",
     [("docs", "docs"), ("token_retention", "tokens kept"), ("docs_per_s", "docs/s")]),
]


_COUNTS = ("docs", "labelled_docs")


def table_rows(evaluation: Evaluation, columns: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Set, system and ``columns`` (one of the ``TABLES``) of every row as text, less the rows
    with nothing but counts in them: a set without document labels has no row in the documents
    table."""
    return [[row["set"], row["system"], *(_cell(row.get(c), c) for c, _ in columns)]
            for row in evaluation.rows()
            if any(row.get(c) is not None for c, _ in columns if c not in _COUNTS)]


def evaluation_tables(evaluation: Evaluation) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """The ``TABLES`` that have rows, each as (title, what its rows score, headers, rows of
    text): what the CLI and the asset's Markdown show."""
    shown = []
    kinds = ("kinds", "share of each kind of labelled line kept: main content and lists by "
             "shape, markup by the detector, noise by its label's letter",
             [(f"kept_{kind}", kind) for kind in (*KINDS, NOISE)
              if any(f"kept_{kind}" in row for row in evaluation.rows())])
    for title, what, columns in [*TABLES, *([kinds] if kinds[2] else [])]:
        rows = table_rows(evaluation, columns)
        if rows:
            shown.append((title, what, ["set", "system", *(header for _, header in columns)],
                          rows))
    return shown


def evaluation_markdown(evaluation: Evaluation) -> str:
    """The tables (lines, documents, cost) as Markdown, then a bar chart of keep-F1 per set
    (refiner vs naive filter)."""
    lines = []
    for title, what, headers, rows in evaluation_tables(evaluation):
        lines += [f"**{title}**: {what}", "", "| " + " | ".join(headers) + " |",
                  "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    lines += [f"keep-F1 per set ({evaluation.refiner_backend} vs {NAIVE}):", "",
              "| set | system | keep-F1 |", "|---|---|---|"]
    for row in evaluation.rows():
        f1 = row.get("keep_f1")
        if f1 is None:
            f1 = row.get("doc_keep_f1")
        if f1 is None:
            continue
        bar = "█" * round(f1 * 40)
        lines.append(f"| {row['set']} | {row['system']} | `{bar}` {f1:.3f} |")
    return "\n".join(lines)
