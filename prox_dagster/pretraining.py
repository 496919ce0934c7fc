"""The pre-training set's manifest: every token file of every shard, hashed incrementally."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from .fingerprint import read_sidecar
from .store import ShardStore, exists, sha256, version
from .token_files import HISTOGRAM_EDGES, histogram_table

TOKENIZED = "tokenized_shard"


@dataclass
class Manifest:
    tokenizer: str
    tokenizer_hash: str
    shards: list[dict] = field(default_factory=list)
    missing_shards: list[str] = field(default_factory=list)
    histogram_edges: list[int] = field(default_factory=lambda: list(HISTOGRAM_EDGES))
    histogram: list[int] = field(default_factory=lambda: [0] * len(HISTOGRAM_EDGES))

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
    groups: dict[tuple, list[str]] = defaultdict(list)
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


def _previous_hashes(store: ShardStore, manifest: str) -> dict[str, dict]:
    try:
        previous = json.loads(store.read_text(manifest)) if exists(manifest) else {}
    except (OSError, ValueError):
        return {}
    return {f["file"]: f for s in previous.get("shards", []) for f in s.get("files", [])}


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
