"""The pre-training set's manifest: the token files of every shard whose whole chain is current
and passed its checks, hashed incrementally, and every shard left out with the reason; the
documents that are copies of an earlier one (``duplicates``), and optionally copies of the token
files without them; for litgpt, the chunks packed across shards (``packed``), which are what a
training job reads."""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl

from .outputs import intact, read_record
from .store import ShardStore, exists, filesystem, sha256, version
from .token_files import (DOCUMENTS_SUFFIX, HISTOGRAM_EDGES, LITDATA_INDEX,
                          filter_token_files, histogram_table, pack_litgpt)

TOKENIZED = "tokenized_shard"


@dataclass
class Manifest:
    tokenizer: str
    tokenizer_hash: str
    shards: list[dict] = field(default_factory=list)
    # every shard left out: {"shard", "status", "reason"}
    excluded: list[dict] = field(default_factory=list)
    histogram_edges: list[int] = field(default_factory=lambda: list(HISTOGRAM_EDGES))
    histogram: list[int] = field(default_factory=lambda: [0] * len(HISTOGRAM_EDGES))
    packed: dict | None = None
    duplicates: dict | None = None

    @property
    def total_tokens(self) -> int:
        return sum(s["tokens"] for s in self.shards)

    @property
    def total_documents(self) -> int:
        return sum(s["documents"] for s in self.shards)

    @property
    def formats(self) -> list[str]:
        return sorted({s["format"] for s in self.shards})

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "total_tokens": self.total_tokens,
                           "total_documents": self.total_documents,
                           "formats": self.formats}, indent=2)

    def shard_rows(self, limit: int | None = None) -> list[dict]:
        """A row per listed shard, the first ``limit`` of them, for a table in the UI."""
        return [{"shard": s["shard"], "status": s["status"], "format": s["format"],
                 "dtype": s["dtype"], "files": len(s["files"]), "documents": s["documents"],
                 "tokens": s["tokens"], "later_copies": s.get("duplicates"),
                 "copies_dropped": bool(s.get("duplicates_dropped")),
                 "sha256": ", ".join(f["sha256"][:12] for f in s["files"][:2])
                 + (" ..." if len(s["files"]) > 2 else ""),
                 "refiner": ", ".join(s["refiner_versions"])} for s in self.shards[:limit]]

    def excluded_rows(self, limit: int = 50) -> list[dict]:
        """The first ``limit`` shards left out, with why (the manifest holds them all)."""
        return [{"shard": e["shard"], "status": e["status"], "reason": e["reason"]}
                for e in self.excluded[:limit]]

    def histogram_table(self) -> str:
        return histogram_table(self.histogram, self.histogram_edges)


class MixedShardsError(ValueError):
    """Tokenized shards that a training job cannot read as one set."""


def check_uniform(manifest: Manifest) -> None:
    """Raise :class:`MixedShardsError` naming the shards when they were tokenized with
    different tokenizers, formats or dtypes (a training job would read wrong ids)."""
    groups: dict[tuple, list[str]] = defaultdict(list)  # one group: a set
    for entry in manifest.shards:
        groups[(entry["tokenizer"], entry["tokenizer_hash"], entry["format"],
                entry["dtype"])].append(entry["shard"])
    if len(groups) > 1:
        described = "; ".join(
            f"tokenizer {name} ({digest[:12]}), {fmt}, {dtype}: {', '.join(shards[:10])}"
            + (f" and {len(shards) - 10} more" if len(shards) > 10 else "")
            for (name, digest, fmt, dtype), shards in sorted(groups.items(),
                                                             key=lambda g: -len(g[1])))
        raise MixedShardsError(
            f"the tokenized shards mix tokenizers, formats or dtypes ({described}); "
            "re-tokenize them with one setting (materialize tokenized_shard for them)")


def _previous(store: ShardStore, manifest: str, warn=None) -> dict:
    """The manifest written before (none, or one that cannot be read: nothing to reuse, said
    to ``warn``)."""
    try:
        previous = json.loads(store.read_text(manifest)) if exists(manifest) else {}
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        previous = exc
    if not isinstance(previous, dict) or not isinstance(previous.get("shards", []), list):
        if warn:
            warn(f"the previous manifest {manifest} is unreadable or of another format "
                 f"({previous if isinstance(previous, Exception) else 'not a manifest'}): "
                 "every token file's hash is taken from its writer or computed again")
        return {}
    return previous


def _previous_hashes(store: ShardStore, manifest: str, warn=None) -> dict[str, dict]:
    previous = _previous(store, manifest, warn)
    return {f["file"]: f for s in previous.get("shards", []) if isinstance(s, dict)
            for f in s.get("files", []) if isinstance(f, dict) and {"file", "bytes", "version",
                                                                     "sha256"} <= set(f)}


PACKED_PREFIX = "litgpt-"


def pack_set(store: ShardStore, manifest: Manifest, manifest_location: str, *,
             chunk_size: int, sep_token: int, litdata: bool = True, progress=None) -> bool:
    """Pack the litgpt shards' token streams, in shard order, into
    ``pretraining_set/litgpt-{key}/train_{i:010d}.bin`` (and, with ``litdata``, the same
    chunks as a litdata set in that folder: ``chunk-0-{i}.bin`` and ``index.json``) and record
    them as ``manifest.packed``; returns False when the previous manifest's chunks (same
    streams, same settings: same key) were reused. Nothing to do for other formats."""
    if not manifest.shards or manifest.formats != ["litgpt"]:
        return False
    dtype = manifest.shards[0]["dtype"]
    key = hashlib.sha256(json.dumps(
        [[s["shard"], [f["sha256"] for f in s["files"]]] for s in manifest.shards]
        + [dtype, chunk_size, sep_token] + (["litdata"] if litdata else [])
    ).encode()).hexdigest()[:16]
    previous = _previous(store, manifest_location).get("packed") or {}
    if previous.get("key") == key and all(exists(f["file"]) for f in previous["files"]):
        manifest.packed = previous
        return False
    folder = f"pretraining_set/{PACKED_PREFIX}{key}"

    def streams():
        for entry in manifest.shards:
            for f in entry["files"]:
                with store.open(f["file"]) as stream:
                    yield stream
                if progress:
                    progress(entry["shard"])

    files: list[dict] = []
    with store.staging_dir(folder) as local:
        # each chunk is published (uploaded, when remote) as soon as it is full
        packed = pack_litgpt(streams(), local, dtype, chunk_size=chunk_size,
                             sep_token=sep_token, litdata=litdata,
                             on_chunk=lambda path: files.extend(store.publish(folder, [path])))
    records = {f["name"]: {"file": store.location(folder, f["name"]), "bytes": f["bytes"],
                           "sha256": f["sha256"]} for f in files}
    manifest.packed = {
        "format": "litgpt", "key": key, "folder": store.location(folder),
        "chunk_size": chunk_size, "sep_token": sep_token, "dtype": dtype,
        "chunks": packed.chunks, "tokens": packed.tokens,
        "padding_tokens": packed.padding_tokens,
        "files": [records[p.name] for p in packed.files],
        "litdata": {"index": store.location(folder, LITDATA_INDEX),
                    "files": [records[p.name] for p in packed.litdata_files]}
        if litdata else None}
    return True


def remove_stale_packs(store: ShardStore, manifest: Manifest) -> list[str]:
    """Packed and deduplicated folders the manifest no longer names (call after writing
    it)."""
    fs, root = filesystem(store.location("pretraining_set"))
    keep = (manifest.packed or {}).get("key")
    removed = []
    kept = {f"{PACKED_PREFIX}{keep}", f"{DEDUPLICATED_PREFIX}{(manifest.duplicates or {}).get('key')}"}
    for path in fs.ls(root, detail=False) if fs.exists(root) else []:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith((PACKED_PREFIX, DEDUPLICATED_PREFIX)) and name not in kept:
            fs.rm(path, recursive=True)
            removed.append(name)
    return removed


LAST_GOOD = "last_good"


def build_manifest(store: ShardStore, shards: list[str], statuses: dict[str, tuple[str, str]],
                   manifest: str, tokenizer: str, tokenizer_hash: str, *,
                   keep_last_good: bool = False, warn=None) -> tuple[Manifest, dict]:
    """The manifest of ``shards``' published token files, in shard order: a shard is listed
    when its ``statuses`` entry (``(status, reason)``, the lineage audit's) is ``current``;
    otherwise it is left out with the reason, or, with ``keep_last_good``, its last published
    token files are listed, marked ``last_good`` with the reason. A file whose size and version
    (local modification time, S3 ETag) match the previous manifest ``manifest`` keeps its hash
    (returns the manifest and hashing counts)."""
    known = _previous_hashes(store, manifest, warn)
    result = Manifest(tokenizer=tokenizer, tokenizer_hash=tokenizer_hash)
    stats = {"files": 0, "rehashed": 0}
    for shard in shards:
        status, reason = statuses.get(shard, ("missing", "not audited"))
        record = read_record(store, TOKENIZED, shard)
        if status != "current" and not (keep_last_good and record is not None):
            result.excluded.append({"shard": shard, "status": status, "reason": reason})
            continue
        if record is None or not intact(store, record):
            result.excluded.append({"shard": shard, "status": "missing",
                                    "reason": "its token files are gone or changed"})
            continue
        extra = record.extra
        files, documents_file = [], None
        for entry in record.files:
            location = store.location(TOKENIZED, entry["name"])
            if entry["name"].endswith(DOCUMENTS_SUFFIX):
                documents_file = {"file": location, "sha256": entry["sha256"]}
                continue  # not a token file: what duplicates are found by
            current = {"file": location, **version(location)}
            old = known.get(location)
            if old and (old["bytes"], old["version"]) == (current["bytes"], current["version"]):
                current["sha256"] = old["sha256"]
            elif current["version"] == entry.get("version"):
                current["sha256"] = entry["sha256"]  # as its writer recorded it
            else:
                current["sha256"] = sha256(location)
                stats["rehashed"] += 1
            files.append(current)
        stats["files"] += len(files)
        result.shards.append({
            "shard": shard, "status": "current" if status == "current" else LAST_GOOD,
            **({} if status == "current" else {"why": f"{status}: {reason}"}),
            "fingerprint": record.fingerprint,
            "format": extra["format"], "dtype": extra["dtype"],
            "documents": extra["documents"], "tokens": extra["tokens"],
            "skipped_empty": extra["skipped_empty"],
            "tokenizer": extra["tokenizer"], "tokenizer_hash": extra["tokenizer_hash"],
            "refiner_versions": sorted(v.strip() for v in extra["refiner_version"].split(",")),
            "files": files,
            "documents_file": documents_file,
            "length_histogram": extra["length_histogram"],
        })
        for i, count in enumerate(extra["length_histogram"]):
            result.histogram[i] += count
    return result, stats


DEDUPLICATED_PREFIX = "deduplicated-"
DEDUP_BUCKET_ROWS = 10_000_000  # documents' keys held at once (about 0.5 GB) when finding copies


def mark_duplicates(store: ShardStore, manifest: Manifest, manifest_location: str, *,
                    drop: bool, progress=None) -> bool:
    """Count, in every listed shard, the documents that are copies of an earlier one: the same
    id or the same text (64-bit hashes), earlier in shard order, then in the shard's own order.
    With ``drop``, a shard holding copies is listed with copies of its token files without
    them (``pretraining_set/deduplicated-{key}/``; reused while its inputs are the same).
    A shard tokenized before documents files were written is listed as not checked. Returns
    whether filtered files were written now."""
    checked = [e for e in manifest.shards if e.get("documents_file")]
    key = hashlib.sha256(json.dumps(
        [[e["shard"], e["documents_file"]["sha256"], [f["sha256"] for f in e["files"]]]
         for e in checked] + [drop]).encode()).hexdigest()[:16]
    later, same_text, same_id = _later_copies(store, checked)
    for index, entry in enumerate(checked):
        entry["duplicates"] = int(len(later.get(index, ())))
    manifest.duplicates = {
        "key": key, "later_copies": int(sum(len(p) for p in later.values())),
        "same_text": same_text, "same_id_only": same_id,
        "shards_with_copies": len(later), "shards_not_checked": len(manifest.shards) - len(checked),
        "dropped": drop}
    if not drop or not later:
        return False
    previous = {e["shard"]: e for e in (_previous(store, manifest_location).get("shards") or [])
                if isinstance(e, dict) and e.get("duplicates_key") == key}
    folder = f"pretraining_set/{DEDUPLICATED_PREFIX}{key}"
    wrote = False
    with store.staging_dir(folder) as local:
        for index, positions in sorted(later.items()):
            entry = checked[index]
            reused = previous.get(entry["shard"])
            if reused and all(exists(f["file"]) for f in reused["files"]):
                entry.update({k: reused[k] for k in ("files", "documents", "tokens",
                                                     "length_histogram", "duplicates_dropped",
                                                     "duplicates_key")})
                continue
            by_name = {f["file"].rsplit("/", 1)[-1]: f["file"]
                       for f in [*entry["files"], entry["documents_file"]]}
            marks = np.zeros(entry["documents"], dtype=bool)
            marks[positions] = True
            written = filter_token_files(lambda name: store.open(by_name[name]), entry["shard"],
                                         entry["format"], entry["dtype"], marks, local)
            published = store.publish(folder, written.files)
            entry.update({
                "files": [{"file": store.location(folder, f["name"]),
                           **version(store.location(folder, f["name"])), "sha256": f["sha256"]}
                          for f in published if not f["name"].endswith(DOCUMENTS_SUFFIX)],
                "documents": written.documents, "tokens": written.tokens,
                "length_histogram": written.histogram,
                "duplicates_dropped": int(len(positions)), "duplicates_key": key})
            wrote = True
            if progress:
                progress(entry["shard"])
    manifest.histogram = [sum(e["length_histogram"][i] for e in manifest.shards)
                          for i in range(len(manifest.histogram))]
    return wrote


def _later_copies(store: ShardStore, entries: list[dict]
                  ) -> tuple[dict[int, np.ndarray], int, int]:
    """Positions of the later copies in each entry (by its index), and how many are copies by
    text and by id alone. The documents' keys are read in buckets of their hashes, each
    holding at most about :data:`DEDUP_BUCKET_ROWS` of them, so memory does not grow with the
    corpus (each further bucket reads the documents files again)."""
    buckets = max(1, math.ceil(sum(e["documents"] for e in entries) / DEDUP_BUCKET_ROWS))
    found = []
    for bucket in range(buckets):
        frames = []
        for index, entry in enumerate(entries):
            with store.open(entry["documents_file"]["file"]) as f:
                listed = pl.read_parquet(io.BytesIO(f.read()), columns=["id", "text_hash"])
            keys = listed.select(
                pl.col("text_hash"), pl.col("id").hash(seed=7).alias("id_hash"),
                pl.int_range(pl.len(), dtype=pl.UInt32).alias("position"),
                pl.lit(index, dtype=pl.UInt32).alias("entry"))
            if buckets > 1:
                keys = keys.filter((pl.col("text_hash") % buckets == bucket)
                                   | (pl.col("id_hash") % buckets == bucket))
            frames.append(keys)
        if not frames:
            break
        # in (entry, position) order: the first of equal keys is the earliest copy
        frame = pl.concat(frames)
        mine = (lambda column: pl.col(column) % buckets == bucket) if buckets > 1 else \
            (lambda column: pl.lit(True))
        found.append(frame.select(
            "entry", "position",
            (mine("text_hash") & ~pl.col("text_hash").is_first_distinct()).alias("by_text"),
            (mine("id_hash") & ~pl.col("id_hash").is_first_distinct()).alias("by_id"),
        ).filter(pl.col("by_text") | pl.col("by_id")))
    if not found:
        return {}, 0, 0
    copies = pl.concat(found).group_by("entry", "position").agg(
        pl.col("by_text").any(), pl.col("by_id").any())
    later = {int(entry): np.sort(group["position"].to_numpy())
             for (entry,), group in copies.group_by("entry")}
    by_text = int(copies["by_text"].sum())
    return later, by_text, int(copies.height - by_text)
