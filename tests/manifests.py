"""The pre-training set's manifest as a training job reads it: the index and every part."""

from pathlib import Path

from prox_dagster.pretraining import load_manifest
from prox_dagster.store import ShardStore


def read_manifest(data: Path) -> dict:
    return load_manifest(ShardStore(data), str(data / "pretraining_set" / "manifest.json"))
