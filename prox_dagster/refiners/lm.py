"""What every LM refiner shares: model identity, version fingerprint, tokenizer, lazy loading.

The version of an LM refiner covers everything that can change its programs: backend, doc and
chunk models with their revision (a hub id) or a hash of their weight and config files (a local
folder), the prompt format version, greedy decoding and its token limits, the program dialect
and backend settings that change numerics (dtype). Computing it never loads a model, so Dagster
can use it as a code version when the code location loads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from ..hub import HubError, hub_commit
from ..lineage import refiner_fingerprint
from ..prompts import DOC_MAX_PROMPT_TOKENS, MAX_NEW_TOKENS, PROMPT_FORMAT_VERSION
from ..environment import cache_dir
from ..tokenization import token_counts

_HASHED = (".safetensors", ".bin", ".pt", ".gguf", ".json", ".model")


class RefinerError(RuntimeError):
    """A refiner backend failed (model missing, server unreachable, bad response)."""


def weights_hash(folder: str | os.PathLike) -> str:
    """sha256 over a model folder's weight, config and tokenizer files (names and contents).

    Per-file digests are cached by (path, size, mtime) under ``$PROX_CACHE_DIR``, so a large
    checkpoint is read once, not at every code-location load.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_HASHED))
    if not files:
        raise RefinerError(f"model folder {str(folder)!r} holds no weight or config files")
    cache_file = cache_dir() / "weight-hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    total = hashlib.sha256()
    changed = False
    for path in files:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        digest = cache.get(key)
        if digest is None:
            with open(path, "rb") as fh:
                digest = cache[key] = hashlib.file_digest(fh, "sha256").hexdigest()
            changed = True
        total.update(f"{path.name}:{digest}\n".encode())
    if changed:
        from ..atomic_writes import write_text_atomic

        write_text_atomic(json.dumps(cache), cache_file)
    return total.hexdigest()[:16]


def model_identity(name_or_path: str, revision: str | None = None, *,
                   resolve: bool = True) -> str:
    """A local folder is identified by its files' hash; a hub id by the commit its revision
    points at (``resolve=False``: as remembered, never asking the hub; see
    :mod:`prox_dagster.hub`)."""
    if Path(name_or_path).is_dir():
        return f"sha256:{weights_hash(name_or_path)}"
    try:
        return f"{name_or_path}@{hub_commit(name_or_path, revision, resolve=resolve)}"
    except HubError as exc:
        raise RefinerError(str(exc)) from None


def short_model_name(name_or_path: str) -> str:
    path = Path(name_or_path)
    return path.name if path.is_dir() else name_or_path


class LMRefiner:
    """Base of the model-backed refiners. Subclasses implement :meth:`_generate`."""

    backend = "lm"
    calls_model = True

    def __init__(self, doc_model: str, chunk_model: str | None = None, *,
                 revision: str | None = None, dialect: str = "prox",
                 tokenizer: str | None = None, settings: dict | None = None,
                 resolve: bool = True):
        if not doc_model:
            raise RefinerError(f"the {self.backend} refiner needs a doc_model (hub id or folder)")
        self.doc_model = doc_model
        self.chunk_model = chunk_model or doc_model
        self.revision = revision
        self._commits: dict[str, str] = {}
        self.dialect = dialect
        self.resolve = resolve
        self.stats: dict[str, int] = {}
        self.tokenizer_source = tokenizer or self.chunk_model
        doc_name, chunk_name = short_model_name(self.doc_model), short_model_name(self.chunk_model)
        self.model_id = doc_name if self.doc_model == self.chunk_model else \
            f"{doc_name}+{chunk_name}"
        self.version = refiner_fingerprint(self.backend, self.model_id, {
            "doc_model": self._identity(self.doc_model),
            "chunk_model": self._identity(self.chunk_model),
            "prompt": PROMPT_FORMAT_VERSION,
            "decoding": {"greedy": True, "max_new_tokens": MAX_NEW_TOKENS},
            "dialect": dialect,
            **(settings or {}),
        })

    def _identity(self, model: str) -> str:
        identity = model_identity(model, self.revision, resolve=self.resolve)
        if not Path(model).is_dir() and self.resolve:
            # load exactly the weights the version names
            self._commits[model] = identity.rpartition("@")[2]
        return identity

    def revision_of(self, model: str) -> str | None:
        """The revision to load ``model`` at: the resolved commit of a hub model."""
        return self._commits.get(model, self.revision)

    @functools.cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self.tokenizer_source,
                                                 revision=self.revision_of(self.tokenizer_source))
        except OSError as exc:
            raise RefinerError(f"cannot load the tokenizer of {self.tokenizer_source!r}: {exc}"
                               ) from exc

    def model_for(self, level: str) -> str:
        if level not in ("doc", "chunk"):
            raise ValueError(f"level must be 'doc' or 'chunk', not {level!r}")
        return self.doc_model if level == "doc" else self.chunk_model

    def generate(self, prompts, *, level: str) -> list[str]:
        model = self.model_for(level)
        if not prompts:
            return []
        result = [""] * len(prompts)
        limit = self.prompt_limit(model)
        lengths = token_counts(self.tokenizer, prompts, add_special_tokens=True) \
            if limit is not None else [0] * len(prompts)
        for i, n in enumerate(lengths):
            if limit is not None and n > limit:  # the engine would reject it, and the batch
                result[i] = f"# skipped: the prompt has {n} tokens, over the {limit} of {model}"
        self.stats["skipped_prompts"] = self.stats.get("skipped_prompts", 0) + sum(
            1 for text in result if text)
        # longest first: batches of similar length pad less, and memory peaks early
        order = sorted((i for i in range(len(prompts)) if not result[i]),
                       key=lambda i: -len(prompts[i]))
        outputs = self._generate(model, [prompts[i] for i in order], MAX_NEW_TOKENS[level])
        for i, text in zip(order, outputs):
            result[i] = text.strip(" ")
        return result

    @property
    def max_doc_prompt_tokens(self) -> int:
        """ProX's 2,000 tokens, or fewer where the doc model takes fewer: a long page is cut
        to fit rather than skipped."""
        limit = self.prompt_limit(self.doc_model)
        return DOC_MAX_PROMPT_TOKENS if limit is None else min(DOC_MAX_PROMPT_TOKENS, limit)

    def prompt_limit(self, model: str) -> int | None:
        """The most prompt tokens ``model`` takes (None: no limit known here). A longer prompt
        is not sent: its program is a comment saying why (it parses as empty: nothing to do,
        and counts against the parse rate)."""
        return None

    def _generate(self, model: str, prompts: list[str], max_new_tokens: int) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        """Release models and servers' connections (the resource calls it after a run)."""
