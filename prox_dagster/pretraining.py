"""The pre-training set's manifest: every token file of every shard, hashed incrementally."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .shards import ShardStore, file_sha256
from .token_files import HISTOGRAM_EDGES

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
        """Document lengths in tokens, in powers of two."""
        total = sum(self.histogram) or 1
        rows = []
        for i, count in enumerate(self.histogram):
            if not count:
                continue
            low = self.histogram_edges[i]
            high = self.histogram_edges[i + 1] - 1 if i + 1 < len(self.histogram_edges) else None
            span = f"{low}-{high}" if high is not None else f"{low}+"
            bar = "█" * max(1, round(40 * count / total))
            rows.append(f"| {span} | {count} | {count / total:.1%} | {bar} |")
        return ("| tokens | documents | share | |\n|---|---|---|---|\n" + "\n".join(rows)
                if rows else "(no documents)")


def _previous_hashes(manifest_path: Path) -> dict[str, dict]:
    try:
        previous = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {f["file"]: f for s in previous.get("shards", []) for f in s.get("files", [])}


def build_manifest(store: ShardStore, shards: list[str], manifest_path: str | os.PathLike,
                   tokenizer: str, tokenizer_hash: str) -> tuple[Manifest, dict]:
    """The manifest of ``shards``' tokenized outputs; a file whose size and modification time
    match the previous manifest keeps its hash (returns the manifest and hashing counts)."""
    known = _previous_hashes(Path(manifest_path))
    manifest = Manifest(tokenizer=tokenizer, tokenizer_hash=tokenizer_hash)
    stats = {"files": 0, "rehashed": 0}
    for shard in shards:
        record = store.provenance(TOKENIZED, shard)
        paths = [store.base / TOKENIZED / name for name in (record or {}).get("files", [])]
        if record is None or not all(p.is_file() for p in paths):
            manifest.missing_shards.append(shard)
            continue
        extra = record["extra"]
        files = []
        for path in paths:
            stat = path.stat()
            entry = {"file": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
            old = known.get(str(path))
            if old and old["bytes"] == stat.st_size and old["mtime_ns"] == stat.st_mtime_ns:
                entry["sha256"] = old["sha256"]
            else:
                entry["sha256"] = file_sha256(path)
                stats["rehashed"] += 1
            files.append(entry)
        stats["files"] += len(files)
        manifest.shards.append({
            "shard": shard, "format": extra["format"], "dtype": extra["dtype"],
            "documents": extra["documents"], "tokens": extra["tokens"],
            "skipped_empty": extra["skipped_empty"],
            "tokenizer": extra["tokenizer"], "tokenizer_hash": extra["tokenizer_hash"],
            "refiner_versions": sorted(v.strip() for v in extra["refiner_version"].split(",")),
            "files": files,
        })
        for i, count in enumerate(extra["length_histogram"]):
            manifest.histogram[i] += count
    return manifest, stats
