"""The pre-training set's manifest: the token files of every shard whose whole chain is current
and passed its checks, hashed incrementally, and every shard left out with the reason; for
litgpt, the chunks packed across shards (``packed``), which are what a training job reads."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from .outputs import intact, read_record
from .store import ShardStore, exists, filesystem, sha256, version
from .token_files import HISTOGRAM_EDGES, histogram_table, pack_litgpt
from .untrusted import markdown_text

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

    def shard_table(self) -> str:
        rows = [f"| {markdown_text(s['shard'], 200)} | {s['status']} | {s['format']} | {s['dtype']} | "
                f"{len(s['files'])} | {s['documents']} | {s['tokens']} | "
                f"{', '.join(f['sha256'][:12] for f in s['files'][:2])}"
                f"{' ...' if len(s['files']) > 2 else ''} | {', '.join(s['refiner_versions'])} |"
                for s in self.shards]
        return ("| shard | status | format | dtype | files | documents | tokens | sha256 | "
                "refiner |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))

    def excluded_table(self, limit: int = 50) -> str:
        rows = [f"| {markdown_text(e['shard'], 200)} | {e['status']} | "
                f"{markdown_text(e['reason'], 300)} |"
                for e in self.excluded[:limit]]
        more = (f"\n\n({len(self.excluded) - limit} more in the manifest)"
                if len(self.excluded) > limit else "")
        return ("| shard | status | reason |\n|---|---|---|\n" + "\n".join(rows) + more
                if rows else "(none)")

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
             chunk_size: int, sep_token: int, progress=None) -> bool:
    """Pack the litgpt shards' token streams, in shard order, into
    ``pretraining_set/litgpt-{key}/train_{i:010d}.bin`` and record them as
    ``manifest.packed``; returns False when the previous manifest's chunks (same streams, same
    settings: same key) were reused. Nothing to do for other formats."""
    if not manifest.shards or manifest.formats != ["litgpt"]:
        return False
    dtype = manifest.shards[0]["dtype"]
    key = hashlib.sha256(json.dumps(
        [[s["shard"], [f["sha256"] for f in s["files"]]] for s in manifest.shards]
        + [dtype, chunk_size, sep_token]).encode()).hexdigest()[:16]
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
                             sep_token=sep_token,
                             on_chunk=lambda path: files.extend(store.publish(folder, [path])))
    manifest.packed = {
        "format": "litgpt", "key": key, "folder": store.location(folder),
        "chunk_size": chunk_size, "sep_token": sep_token, "dtype": dtype,
        "chunks": packed.chunks, "tokens": packed.tokens,
        "padding_tokens": packed.padding_tokens,
        "files": [{"file": store.location(folder, f["name"]), "bytes": f["bytes"],
                   "sha256": f["sha256"]} for f in files]}
    return True


def remove_stale_packs(store: ShardStore, manifest: Manifest) -> list[str]:
    """Packed folders the manifest no longer names (call after writing it)."""
    fs, root = filesystem(store.location("pretraining_set"))
    keep = (manifest.packed or {}).get("key")
    removed = []
    for path in fs.ls(root, detail=False) if fs.exists(root) else []:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith(PACKED_PREFIX) and name != f"{PACKED_PREFIX}{keep}":
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
        files = []
        for entry in record.files:
            location = store.location(TOKENIZED, entry["name"])
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
        })
        for i, count in enumerate(extra["length_histogram"]):
            result.histogram[i] += count
    return result, stats
