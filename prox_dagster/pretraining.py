"""The pre-training set's manifest: every token file of every shard, hashed incrementally;
for litgpt, the chunks packed across shards (``packed``), which are what a training job reads."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from .fingerprint import read_sidecar
from .store import ShardStore, exists, filesystem, sha256, version
from .token_files import HISTOGRAM_EDGES, histogram_table, pack_litgpt

TOKENIZED = "tokenized_shard"


@dataclass
class Manifest:
    tokenizer: str
    tokenizer_hash: str
    shards: list[dict] = field(default_factory=list)
    missing_shards: list[str] = field(default_factory=list)
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
        rows = [f"| {s['shard']} | {s['format']} | {s['dtype']} | {len(s['files'])} | "
                f"{s['documents']} | {s['tokens']} | "
                f"{', '.join(f['sha256'][:12] for f in s['files'][:2])}"
                f"{' ...' if len(s['files']) > 2 else ''} | {', '.join(s['refiner_versions'])} |"
                for s in self.shards]
        return ("| shard | format | dtype | files | documents | tokens | sha256 | refiner |\n"
                "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))

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


def _previous(store: ShardStore, manifest: str) -> dict:
    try:
        return json.loads(store.read_text(manifest)) if exists(manifest) else {}
    except (OSError, ValueError):
        return {}


def _previous_hashes(store: ShardStore, manifest: str) -> dict[str, dict]:
    previous = _previous(store, manifest)
    return {f["file"]: f for s in previous.get("shards", []) for f in s.get("files", [])}


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


def build_manifest(store: ShardStore, shards: list[str], manifest: str,
                   tokenizer: str, tokenizer_hash: str) -> tuple[Manifest, dict]:
    """The manifest of ``shards``' tokenized outputs; a file whose size and version (local
    modification time, S3 ETag) match the previous manifest ``manifest`` keeps its hash
    (returns the manifest and hashing counts)."""
    known = _previous_hashes(store, manifest)
    result = Manifest(tokenizer=tokenizer, tokenizer_hash=tokenizer_hash)
    stats = {"files": 0, "rehashed": 0}
    for shard in shards:
        record = read_sidecar(store, TOKENIZED, shard)
        locations = [store.location(TOKENIZED, f["name"]) for f in (record or {}).get("files", [])]
        if record is None or not all(exists(loc) for loc in locations):
            result.missing_shards.append(shard)
            continue
        extra = record["extra"]
        files = []
        for location in locations:
            entry = {"file": location, **version(location)}
            old = known.get(location)
            if old and (old["bytes"], old["version"]) == (entry["bytes"], entry["version"]):
                entry["sha256"] = old["sha256"]
            else:
                entry["sha256"] = sha256(location)
                stats["rehashed"] += 1
            files.append(entry)
        stats["files"] += len(files)
        result.shards.append({
            "shard": shard, "format": extra["format"], "dtype": extra["dtype"],
            "documents": extra["documents"], "tokens": extra["tokens"],
            "skipped_empty": extra["skipped_empty"],
            "tokenizer": extra["tokenizer"], "tokenizer_hash": extra["tokenizer_hash"],
            "refiner_versions": sorted(v.strip() for v in extra["refiner_version"].split(",")),
            "files": files,
        })
        for i, count in enumerate(extra["length_histogram"]):
            result.histogram[i] += count
    return result, stats
