"""The ablation's arms from pages in JSONL files (``prox-dagster ablate`` and the benchmark):
the pages that carry gold clean text are split, by a hash of their id, into training pages and
held-out pages whose gold text is the validation set; every other page trains. The arms are
the training pages' raw text, what the naive line filter leaves of it, and what the refiner
leaves of it through the pipeline's own stages."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .ablation import AblationError, Arm, gold_text, text_arm
from .chunking import DEFAULT_MAX_TOKENS
from .evaluation import LabelledDocument, LabelledSet, naive_text, refine_set
from .execute import ExecutionPolicy
from .local_files import NotRegularFile, open_regular


BUILT_IN = ("raw", "refined", "naive")


@dataclass
class Page:
    id: str
    text: str
    gold: str | None   # gold main-content text, when the record carries one


def _records(path: str | os.PathLike, what: str):
    """(line number, record) of every JSON object of a JSONL file (or a folder's
    ``docs.jsonl``, which may link only within the folder); unreadable lines are skipped."""
    path = Path(path)
    file = path / "docs.jsonl" if path.is_dir() else path
    try:
        binary = open_regular(file, what, follow_links=True,
                              inside=path if path.is_dir() else None)
    except (FileNotFoundError, NotRegularFile) as exc:
        raise AblationError(f"{what} {str(path)!r}: {exc}") from None
    with binary:
        for number, raw in enumerate(binary, 1):
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict):
                yield number, record


def read_pages(path: str | os.PathLike) -> list[Page]:
    """Every record with a string ``text`` of a JSONL file (or a folder's ``docs.jsonl``), in
    order; ids made unique with the set's name."""
    name = Path(path).name if Path(path).is_dir() else Path(path).stem
    pages = [Page(f"{name}/{record.get('id') or number}", record["text"],
                  gold_text(record) if _has_gold(record) else None)
             for number, record in _records(path, "pages")
             if isinstance(record.get("text"), str)]
    if not pages:
        raise AblationError(f"pages {str(path)!r}: no record with a string 'text'")
    return pages


def gold_texts(path: str | os.PathLike) -> list[str]:
    """The clean text of every record of a JSONL file (:func:`gold_text`)."""
    return [text for _, record in _records(path, "validation set")
            if (text := gold_text(record))]


def _has_gold(record: dict) -> bool:
    return any(record.get(key) is not None
               for key in ("clean_text", "line_labels", "line_labels_derived"))


def held_out(page: Page, share: float) -> bool:
    """Whether a page with gold text is held out: a hash of its id, so the same pages are
    held out on every machine and every run."""
    digest = hashlib.blake2b(page.id.encode("utf-8", "replace"), digest_size=8).digest()
    return page.gold is not None and int.from_bytes(digest, "little") / 2 ** 64 < share


def split_pages(pages: Sequence[Page], share: float) -> tuple[list[Page], list[str]]:
    """The training pages and the held-out pages' gold texts."""
    if not 0 < share < 1:
        raise AblationError(f"holdout share {share} is not between 0 and 1")
    train = [p for p in pages if not held_out(p, share)]
    validation = [p.gold for p in pages if held_out(p, share) and p.gold and p.gold.strip()]
    return train, validation


def page_arms(pages: Sequence[Page], out_dir: str | os.PathLike, tokenizer, refiner,
              chunk_tokenizer, *, max_tokens: int = DEFAULT_MAX_TOKENS,
              policy: ExecutionPolicy | None = None, fmt: str = "megatron",
              log: Callable[[str], None] = lambda _: None) -> list[Arm]:
    """``raw``, ``refined`` and ``naive`` arms of the same pages in the same order, as
    ``fmt`` token files."""
    policy = policy or ExecutionPolicy()
    out_dir = Path(out_dir)
    raw = text_arm("raw", ((p.id, p.text) for p in pages), out_dir, tokenizer, "raw text",
                   fmt=fmt)
    naive = text_arm("naive", ((p.id, naive_text(p.text, policy)) for p in pages), out_dir,
                     tokenizer, "naive line filter", fmt=fmt)
    log(f"refining {len(pages)} pages with {refiner.version}")
    documents = LabelledSet("ablation", str(out_dir), [
        LabelledDocument(p.id, p.text, None, None, None) for p in pages])
    clean, _ = refine_set(documents, refiner, chunk_tokenizer, max_tokens=max_tokens,
                          policy=policy)
    kept = clean.filter(clean["status"].is_in(["kept", "fallback_raw"]))
    refined = text_arm("refined", zip(kept["id"], kept["text"]), out_dir, tokenizer,
                       refiner.version, fmt=fmt)
    return [raw, refined, naive]


def jsonl_arm(name: str, path: str | os.PathLike, out_dir: str | os.PathLike, tokenizer, *,
              fmt: str = "megatron", **chunk) -> Arm:
    """A further arm from a JSONL file (or a folder's ``docs.jsonl``) of documents with
    ``text``, in their order: another refiner's output, another tool's, an older set's text.
    Its name may not be one of the built-in arms'."""
    if name in BUILT_IN or not name.replace("_", "").replace("-", "").isalnum():
        raise AblationError(f"arm name {name!r}: letters, digits, - and _, and none of "
                            f"{BUILT_IN}")
    pages = read_pages(path)
    return text_arm(name, ((p.id, p.text) for p in pages), out_dir, tokenizer, str(path),
                    fmt=fmt, **chunk)


def parse_arm(spec: str) -> tuple[str, str]:
    """``NAME=PATH``, as ``--arm`` and the asset's ``arms`` config name a further arm."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise AblationError(f"arm {spec!r}: expected NAME=PATH (a JSONL file of documents "
                            "with 'text')")
    return name, path
