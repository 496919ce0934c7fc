"""Refiner outputs checkpointed per batch, so a killed or preempted refiner step resumes where it
stopped and loses at most the batch it was generating.

A batch is one JSON object under ``.checkpoints/{asset}/{shard}/{fingerprint}/``, named by a hash
of the refiner version, the level and the prompts: never reused across versions or inputs, and
one that cannot be read is generated again with a warning.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

from .store import ShardStore, exists, filesystem

Warn = Callable[[str], None]
KEEP_OUTPUTS = 4  # fingerprints whose programs a shard keeps
USED = "used"  # a fingerprint folder's marker: when an output last used its programs


def batch_key(version: str, level: str, prompts: Sequence[str]) -> str:
    digest = hashlib.sha256(f"{version}\x00{level}\x00{len(prompts)}".encode())
    for prompt in prompts:
        digest.update(b"\x00" + prompt.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]


class BatchCheckpoints:
    """The checkpoints of one shard of one refiner stage."""

    def __init__(self, store: ShardStore, asset: str, shard: str, fingerprint: str, *,
                 warn: Warn | None = None):
        self.store, self.asset, self.shard = store, asset, shard
        self.fingerprint = fingerprint
        self.warn = warn or (lambda message: None)
        self.folder = store.location(".checkpoints", asset, shard)
        self.stats = {"batches_resumed": 0, "prompts_resumed": 0, "batches_generated": 0,
                      "prompts_generated": 0}
        self.keys: set[str] = set()  # the batches of this run: others are another version's

    def _location(self, key: str) -> str:
        return self.store.location(".checkpoints", self.asset, self.shard, self.fingerprint,
                                   f"{key}.json")

    def load(self, version: str, level: str, prompts: Sequence[str]) -> list[str] | None:
        """The programs of this batch if a valid checkpoint holds them, else None."""
        key = batch_key(version, level, prompts)
        self.keys.add(key)
        location = self._location(key)
        if not exists(location):
            return None
        try:
            record = json.loads(self.store.read_text(location))
            outputs = record["outputs"]
            valid = (record.get("key") == key and record.get("version") == version
                     and isinstance(outputs, list) and len(outputs) == len(prompts)
                     and all(isinstance(o, str) for o in outputs))
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            self.warn(f"shard {self.shard!r}: checkpoint {location} cannot be read "
                      f"({type(exc).__name__}: {exc}); the batch is generated again")
            return None
        if not valid:
            self.warn(f"shard {self.shard!r}: checkpoint {location} does not hold this batch's "
                      f"{len(prompts)} programs of refiner {version}; the batch is generated "
                      "again")
            return None
        self.stats["batches_resumed"] += 1
        self.stats["prompts_resumed"] += len(prompts)
        return outputs

    def save(self, version: str, level: str, prompts: Sequence[str],
             outputs: Sequence[str]) -> None:
        key = batch_key(version, level, prompts)
        self.keys.add(key)
        self.store.write_text(json.dumps({"key": key, "version": version, "level": level,
                                          "outputs": list(outputs)}),
                              ".checkpoints", self.asset, self.shard, self.fingerprint,
                              f"{key}.json")
        self.stats["batches_generated"] += 1
        self.stats["prompts_generated"] += len(prompts)

    def finish(self) -> None:
        """The shard's output is written: its programs stay, with those of the shard's
        :data:`KEEP_OUTPUTS` - 1 outputs used before it (a setting changed and changed back
        asks the model nothing); older fingerprints' are removed, and so are batches of this
        fingerprint this run did not use (damaged, or of other prompts), saying how many."""
        fs, path = filesystem(self.folder)
        if not fs.exists(path):
            return
        # an empty marker, rewritten: its modification time says when the programs were used
        self.store.write_text("", ".checkpoints", self.asset, self.shard, self.fingerprint,
                              USED)
        used = []
        for entry in fs.ls(path, detail=False):
            try:
                when = fs.modified(f"{entry.rstrip('/')}/{USED}").timestamp()
            except (FileNotFoundError, OSError):
                when = 0.0  # unfinished or damaged: the oldest
            used.append((when, entry))
        for _, entry in sorted(used, reverse=True)[KEEP_OUTPUTS:]:
            fs.rm(entry, recursive=True)
        here = f"{path.rstrip('/')}/{self.fingerprint}"
        unused = [entry for entry in fs.find(here)
                  if entry.endswith(".json")
                  and entry.rsplit("/", 1)[-1].removesuffix(".json") not in self.keys]
        if unused:
            self.warn(f"shard {self.shard!r}: {len(unused)} checkpoints of other batches "
                      "(damaged, or of other prompts) were not used and are removed")
            for entry in unused:
                fs.rm_file(entry)
