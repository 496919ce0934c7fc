"""The pre-training set's manifest: the token files of every shard whose whole chain is current
and passed its checks, hashed incrementally, and every shard left out with the reason; the
documents that are copies of an earlier one (``duplicates``), and optionally copies of the token
files without them; for litgpt, the chunks packed across shards (``packed``), which are what a
training job reads. Written as an index (``manifest.json``) and parts of :data:`PART_SHARDS`
shards each, named by their content; a part whose shards' catalog keys did not change is reused
unread (:func:`load_manifest` reads it all back)."""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from .outputs import intact, read_record
from .store import ShardStore, exists, filesystem, list_files, sha256, version
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
    # the shards of each part, in order, with the key of what it was built from
    parts: list[dict] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return sum(s["tokens"] for s in self.shards)

    @property
    def total_documents(self) -> int:
        return sum(s["documents"] for s in self.shards)

    @property
    def formats(self) -> list[str]:
        return sorted({s["format"] for s in self.shards})

    def index(self, parts: list[dict]) -> dict:
        """The index a training job reads first: everything but the shards, which are in
        ``parts`` (each with its file, sha256, shard range and totals)."""
        return {"format": MANIFEST_FORMAT, "tokenizer": self.tokenizer,
                "tokenizer_hash": self.tokenizer_hash, "total_tokens": self.total_tokens,
                "total_documents": self.total_documents, "formats": self.formats,
                "shards_listed": len(self.shards), "shards_excluded": len(self.excluded),
                "histogram_edges": self.histogram_edges, "histogram": self.histogram,
                "packed": self.packed, "duplicates": self.duplicates, "parts": parts}

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


MANIFEST_FORMAT = 2
PART_SHARDS = 1000  # shards per part of the manifest
PARTS = "parts"  # their folder in pretraining_set/


def _previous(store: ShardStore, manifest: str, warn=None) -> dict:
    """The index written before (none, or one that cannot be read: nothing to reuse, said
    to ``warn``)."""
    try:
        previous = json.loads(store.read_text(manifest)) if exists(manifest) else {}
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        previous = exc
    if not isinstance(previous, dict) or not isinstance(previous.get("parts", []), list):
        if warn:
            warn(f"the previous manifest {manifest} is unreadable or of another format "
                 f"({previous if isinstance(previous, Exception) else 'not a manifest'}): "
                 "every part is built again, every token file's hash taken from its writer "
                 "or computed again")
        return {}
    return previous


def _read_part(store: ShardStore, part: dict) -> dict | None:
    """A part the index names, when it is whole (its sha256) and of this format."""
    try:
        data = store.read_bytes(part["file"])
        if hashlib.sha256(data).hexdigest() != part["sha256"]:
            return None
        content = json.loads(data)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if not isinstance(content, dict) or not isinstance(content.get("shards"), list) \
            or not isinstance(content.get("excluded"), list):
        return None
    return content


def load_manifest(store: ShardStore, location: str) -> dict:
    """The whole manifest at ``location``: its index with every part's ``shards`` and
    ``excluded`` read back, in shard order (a part that is missing or changed raises)."""
    index = json.loads(store.read_text(location))
    shards, excluded = [], []
    for part in index.get("parts", []):
        content = _read_part(store, part)
        if content is None:
            raise ValueError(f"manifest part {part.get('file')} is missing, changed or "
                             "unreadable: materialize pretraining_set again")
        shards += content["shards"]
        excluded += content["excluded"]
    return {**index, "shards": shards, "excluded": excluded}


def _known_hashes(store: ShardStore, parts: list[dict], first: str, last: str
                  ) -> dict[str, dict]:
    """The token files' hashes the previous parts that overlap ``first``..``last`` recorded."""
    known = {}
    for part in parts:
        if not (isinstance(part, dict) and part.get("first", "") <= last
                and part.get("last", "") >= first):
            continue
        content = _read_part(store, part) or {}
        known.update({f["file"]: f for s in content.get("shards", []) if isinstance(s, dict)
                      for f in s.get("files", [])
                      if isinstance(f, dict) and {"file", "bytes", "version", "sha256"} <= set(f)})
    return known


def part_key(rows: list[tuple], tokenizer: str, tokenizer_hash: str, options: dict) -> str:
    """What a part is built from: its shards' statuses and catalog keys (the versions of
    every sidecar and of the crawl file, and the settings), and the manifest's options."""
    return hashlib.sha256(json.dumps([MANIFEST_FORMAT, tokenizer, tokenizer_hash,
                                      sorted(options.items()), rows]).encode()
                          ).hexdigest()[:32]


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
    kept = {f"{PACKED_PREFIX}{keep}",
            f"{DEDUPLICATED_PREFIX}{(manifest.duplicates or {}).get('key')}"}
    for path in fs.ls(root, detail=False) if fs.exists(root) else []:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith((PACKED_PREFIX, DEDUPLICATED_PREFIX)) and name not in kept:
            fs.rm(path, recursive=True)
            removed.append(name)
    return removed


LAST_GOOD = "last_good"


def build_manifest(store: ShardStore, shards: list[str], statuses: dict[str, tuple[str, str]],
                   manifest: str, tokenizer: str, tokenizer_hash: str, *,
                   keep_last_good: bool = False, keys: dict[str, str] | None = None,
                   options: dict | None = None, warn=None) -> tuple[Manifest, dict]:
    """The manifest of ``shards``' published token files, in shard order: a shard is listed
    when its ``statuses`` entry (``(status, reason)``, the lineage audit's) is ``current``;
    otherwise it is left out with the reason, or, with ``keep_last_good``, its last published
    token files are listed, marked ``last_good`` with the reason. A file whose size and version
    (local modification time, S3 ETag) match the previous manifest ``manifest`` keeps its hash.
    ``keys``: each shard's catalog key; a part of :data:`PART_SHARDS` shards whose statuses
    and keys are those the previous manifest's part was built from is taken from it as it
    is, no sidecar read and no file looked at; ``options``: the other settings its content
    depends on (returns the manifest and counts)."""
    previous = _previous(store, manifest, warn)
    old_parts = [p for p in previous.get("parts", []) if isinstance(p, dict)]
    reusable = {p.get("key"): p for p in old_parts} if keys is not None else {}
    result = Manifest(tokenizer=tokenizer, tokenizer_hash=tokenizer_hash)
    stats = {"files": 0, "rehashed": 0, "parts": 0, "parts_reused": 0}
    for start in range(0, len(shards), PART_SHARDS):
        chunk = shards[start:start + PART_SHARDS]
        rows = [(shard, *statuses.get(shard, ("missing", "not audited")),
                 (keys or {}).get(shard)) for shard in chunk]
        key = part_key(rows, tokenizer, tokenizer_hash,
                       {**(options or {}), "keep_last_good": keep_last_good})
        result.parts.append({"key": key, "shards": chunk})
        stats["parts"] += 1
        content = _read_part(store, reusable[key]) if key in reusable else None
        if content is not None:
            result.parts[-1]["read_from"] = reusable[key]["file"]  # whole: its sha256 held
            result.shards += content["shards"]
            result.excluded += content["excluded"]
            stats["files"] += sum(len(entry["files"]) for entry in content["shards"])
            stats["parts_reused"] += 1
            continue
        known = _known_hashes(store, old_parts, chunk[0], chunk[-1])
        for shard, status, reason, _ in rows:
            _add_shard(store, result, shard, status, reason, known, keep_last_good, stats)
    for entry in result.shards:
        for i, count in enumerate(entry["length_histogram"]):
            result.histogram[i] += count
    return result, stats


def _add_shard(store: ShardStore, result: Manifest, shard: str, status: str, reason: str,
               known: dict[str, dict], keep_last_good: bool, stats: dict) -> None:
    record = read_record(store, TOKENIZED, shard)
    if status != "current" and not (keep_last_good and record is not None):
        result.excluded.append({"shard": shard, "status": status, "reason": reason})
        return
    if record is None or not intact(store, record):
        result.excluded.append({"shard": shard, "status": "missing",
                                "reason": "its token files are gone or changed"})
        return
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


def write_manifest(store: ShardStore, manifest: Manifest) -> dict:
    """Write the parts that changed, then the index (atomically: a reader sees the old
    manifest or the new one), then remove the parts no index names; returns counts."""
    part_of = {shard: i for i, part in enumerate(manifest.parts) for shard in part["shards"]}
    contents: list[dict] = [{"shards": [], "excluded": []} for _ in manifest.parts]
    for entry in manifest.shards:
        contents[part_of[entry["shard"]]]["shards"].append(entry)
    for entry in manifest.excluded:
        contents[part_of[entry["shard"]]]["excluded"].append(entry)
    listed = list_files(store.location("pretraining_set", PARTS), ".json")
    parts, written = [], 0
    for i, (part, content) in enumerate(zip(manifest.parts, contents)):
        data = json.dumps({"format": MANIFEST_FORMAT, "part": i, **content}).encode()
        digest = hashlib.sha256(data).hexdigest()
        name = f"part-{i:05d}-{digest[:16]}.json"
        location = store.location("pretraining_set", PARTS, name)
        if part.get("read_from") != location:  # (one read whole, unchanged, stays)
            store.write_bytes(data, "pretraining_set", PARTS, name)
            written += 1
        parts.append({"file": location, "sha256": digest,
                      "key": part["key"], "first": part["shards"][0],
                      "last": part["shards"][-1], "shards": len(part["shards"]),
                      "listed": len(content["shards"]), "excluded": len(content["excluded"]),
                      "documents": sum(e["documents"] for e in content["shards"]),
                      "tokens": sum(e["tokens"] for e in content["shards"])})
    store.write_text(json.dumps(manifest.index(parts), indent=1), "pretraining_set",
                     "manifest.json")
    named = {part["file"].rsplit("/", 1)[-1] for part in parts}
    removed = [name for name in listed if name not in named]
    for name in removed:
        store.remove(store.location("pretraining_set", PARTS, name))
    return {"parts_written": written, "parts_removed": len(removed)}


def _previous_entries(store: ShardStore, location: str) -> list:
    """Every shard the previous manifest listed (none when it cannot be read whole)."""
    try:
        return load_manifest(store, location)["shards"] if exists(location) else []
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return []


DEDUPLICATED_PREFIX = "deduplicated-"
DEDUP_BUCKET_ROWS = 10_000_000  # documents' keys held at once (about 0.5 GB) when finding copies


def mark_duplicates(store: ShardStore, manifest: Manifest, manifest_location: str, *,
                    drop: bool, count: bool = True, progress=None) -> bool:
    """Count, in every listed shard, the documents that are copies of an earlier one: the same
    id or the same text (64-bit hashes), earlier in shard order, then in the shard's own order.
    The count of the previous manifest is kept while no shard's documents changed; otherwise
    every listed shard's documents file is read. ``count=False`` (without ``drop``): not
    counted (``duplicates.counted`` false). With ``drop``, a shard holding copies is listed
    with copies of its token files without them (``pretraining_set/deduplicated-{key}/``;
    reused while its inputs are the same). A shard tokenized before documents files were
    written is listed as not checked. Returns whether filtered files were written now."""
    if not (count or drop):
        for entry in manifest.shards:
            entry.pop("duplicates", None)
        manifest.duplicates = {"counted": False, "dropped": False}
        return False
    checked = [e for e in manifest.shards if e.get("documents_file")]
    key = hashlib.sha256(json.dumps(
        [[e["shard"], e["documents_file"]["sha256"], [f["sha256"] for f in e["files"]]]
         for e in checked] + [drop]).encode()).hexdigest()[:16]
    before = _previous(store, manifest_location).get("duplicates") or {}
    if not drop and before.get("key") == key and all(
            isinstance(e.get("duplicates"), int) for e in checked):
        manifest.duplicates = before  # no documents changed: the same copies
        return False
    later, same_text, same_id = _later_copies(store, checked)
    for index, entry in enumerate(checked):
        entry["duplicates"] = int(len(later.get(index, ())))
    manifest.duplicates = {
        "key": key, "later_copies": int(sum(len(p) for p in later.values())),
        "same_text": same_text, "same_id_only": same_id,
        "shards_with_copies": len(later), "shards_not_checked": len(manifest.shards) - len(checked),
        "counted": True, "dropped": drop}
    if not drop or not later:
        return False
    previous = {e["shard"]: e for e in _previous_entries(store, manifest_location)
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
