"""Hub ids resolved to the commits their revisions point at, and remembered.

A branch name alone would let new weights behind the same name pass for the old ones, so a hub
model or tokenizer is identified by a commit. Asking the hub is for the steps that use the
model (:func:`hub_commit` with ``resolve=True``): what they learn is remembered in
``$PROX_CACHE_DIR/hub-commits.json``, and loading the code location reads only that and the
hub cache's own refs (``resolve=False``), never the network: a hub that is down fails the step
that needs the model, naming it, not the code location.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

COMMIT = re.compile(r"[0-9a-f]{40}")
UNRESOLVED = "unresolved"


class HubError(RuntimeError):
    """A hub id whose revision cannot be resolved to a commit."""


def _remembered_file() -> Path:
    from .environment import cache_dir

    return cache_dir() / "hub-commits.json"


def _remembered() -> dict[str, str]:
    try:
        data = json.loads(_remembered_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(key: str, commit: str) -> None:
    from .atomic_writes import write_text_atomic

    known = _remembered()
    if known.get(key) != commit:
        known[key] = commit
        try:
            write_text_atomic(json.dumps(known, indent=1, sort_keys=True), _remembered_file())
        except OSError:
            pass  # a read-only cache: the next load reads the hub cache's refs instead


def hub_commit(repo_id: str, revision: str | None = None, *, resolve: bool = True) -> str:
    """The commit ``revision`` (a branch, tag or commit; default ``main``) of ``repo_id``
    points at. ``resolve``: ask the hub (offline, or when it does not answer: the local
    caches), else only what this machine remembers, and ``unresolved:{revision}`` when it
    remembers nothing."""
    revision = revision or "main"
    if COMMIT.fullmatch(revision):
        return revision
    key = f"{repo_id}@{revision}"
    from huggingface_hub import constants

    problem = "HF_HUB_OFFLINE is set"
    if resolve and not constants.HF_HUB_OFFLINE:
        from huggingface_hub import HfApi

        try:
            commit = HfApi().model_info(repo_id, revision=revision).sha
        except Exception as exc:  # unreachable hub, unknown repo: the caches may still know
            problem = f"the hub did not answer ({type(exc).__name__}: {exc})"
        else:
            _remember(key, commit)
            return commit
    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / revision
    if ref.is_file():
        return ref.read_text().strip()
    if key in _remembered():
        return _remembered()[key]
    if not resolve:
        return f"{UNRESOLVED}:{revision}"
    raise HubError(f"model {repo_id!r} revision {revision!r} cannot be resolved to a commit: "
                   f"{problem}, and the local cache has no {ref}; download the model or set "
                   "PROX_MODEL_REVISION to a commit")
