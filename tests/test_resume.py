"""A refiner step killed mid-shard resumes from its per-batch checkpoints: the batches it had
finished are not generated again, and the result equals an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from prox_dagster import definitions
from prox_dagster.checkpoints import KEEP_OUTPUTS, BatchCheckpoints, batch_key
from prox_dagster.pipeline import refine_documents
from prox_dagster.refiners import RulesConfig, RulesRefiner
from prox_dagster.sample import write_sample_crawl
from prox_dagster.store import ShardStore

sys.path.insert(0, str(Path(__file__).parent))
import resume_worker  # noqa: E402

SHARD = "sample-crawl.00000"


class CountingRules(RulesRefiner):
    """The rules refiner, counting the prompts it is asked to write programs for."""

    def __init__(self, config: RulesConfig | None = None):
        super().__init__(config)
        self.prompts_seen = 0

    def generate(self, prompts, *, level):
        self.prompts_seen += len(prompts)
        return super().generate(prompts, level=level)


def _raw(n: int) -> pl.DataFrame:
    texts = [f"Page {i}\nA sentence of real prose about topic {i}, long enough to keep." * 3
             for i in range(n)]
    return pl.DataFrame({"id": [f"d{i}" for i in range(n)], "text": texts})


def test_batches_are_taken_from_checkpoints_of_the_same_version_only(tmp_path):
    store, raw = ShardStore(tmp_path), _raw(10)
    warnings: list[str] = []
    first = BatchCheckpoints(store, "doc_refined_shard", SHARD, "fp-1", warn=warnings.append)
    refiner = CountingRules()
    expected = refine_documents(raw, refiner, batch_size=3, checkpoints=first)
    assert refiner.prompts_seen == 10 and first.stats["batches_generated"] == 4
    folder = tmp_path / ".checkpoints" / "doc_refined_shard" / SHARD
    files = sorted((folder / "fp-1").iterdir())
    assert len(files) == 4

    # a rerun takes every batch from the checkpoints and sends no prompt
    again = CountingRules()
    resumed = BatchCheckpoints(store, "doc_refined_shard", SHARD, "fp-1", warn=warnings.append)
    assert refine_documents(raw, again, batch_size=3, checkpoints=resumed).equals(expected)
    assert again.prompts_seen == 0 and resumed.stats["prompts_resumed"] == 10

    # a write cut short and a file that holds another batch's programs: both regenerated,
    # with a warning each, and the result is the same
    files[0].write_text(files[0].read_text()[:20])
    record = json.loads(files[1].read_text())
    record["outputs"] = record["outputs"][:1]
    files[1].write_text(json.dumps(record))
    third = CountingRules()
    damaged = BatchCheckpoints(store, "doc_refined_shard", SHARD, "fp-1", warn=warnings.append)
    assert refine_documents(raw, third, batch_size=3, checkpoints=damaged).equals(expected)
    assert damaged.stats["batches_generated"] == 2 and damaged.stats["batches_resumed"] == 2
    # one warning each, in batch order (the files' names are hashes: their order is not)
    assert len(warnings) == 2
    assert sorted("cannot be read" in w for w in warnings) == [False, True]
    assert sorted("does not hold this batch's" in w for w in warnings) == [False, True]

    # the same prompts for another input content (another fingerprint: the shard changed, so
    # a shard-level signal may have): nothing is reused
    moved = CountingRules()
    changed = BatchCheckpoints(store, "doc_refined_shard", SHARD, "fp-2")
    refine_documents(raw, moved, batch_size=3, checkpoints=changed)
    assert moved.prompts_seen == 10 and changed.stats["batches_resumed"] == 0

    # another refiner version hashes the same prompts to other names: nothing is reused
    other = CountingRules(RulesConfig(min_words=80))
    assert other.version != refiner.version
    fresh = BatchCheckpoints(store, "doc_refined_shard", SHARD, "fp-1")
    refine_documents(raw, other, batch_size=3, checkpoints=fresh)
    assert other.prompts_seen == 10 and fresh.stats["batches_resumed"] == 0
    assert batch_key(other.version, "doc", ["p"]) != batch_key(refiner.version, "doc", ["p"])
    ignored: list[str] = []
    fresh.warn = ignored.append
    # the output is written: this fingerprint's programs stay, with the last outputs' before
    # it (fp-2 here); the first version's batches under fp-1 were not used: said, removed
    changed.finish()
    fresh.finish()
    assert sorted(p.name for p in folder.iterdir()) == ["fp-1", "fp-2"]
    assert len(list((folder / "fp-1").glob("*.json"))) == 4
    assert ignored == [f"shard {SHARD!r}: 4 checkpoints of other batches (damaged, or of other "
                       "prompts) were not used and are removed"]
    # at most KEEP_OUTPUTS fingerprints, the least recently used removed first
    for n in range(3, 3 + KEEP_OUTPUTS):
        later = BatchCheckpoints(store, "doc_refined_shard", SHARD, f"fp-{n}")
        refine_documents(raw, CountingRules(), batch_size=3, checkpoints=later)
        later.finish()
    assert sorted(p.name for p in folder.iterdir()) == [f"fp-{n}" for n in range(3, 7)]


@pytest.mark.lm
@pytest.mark.integration
def test_a_refiner_step_killed_mid_shard_resumes_without_regenerating(tmp_path, trained_model):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    for folder in (killed, clean):
        write_sample_crawl(folder, n_shards=1, docs_per_shard=24)
    folder = killed / ".checkpoints" / "doc_refined_shard" / SHARD
    child = subprocess.Popen([sys.executable, resume_worker.__file__, str(killed),
                              str(trained_model)], env={**os.environ, "PYTHONPATH": os.pathsep
                                                        .join(sys.path)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not (folder.is_dir() and len(list(folder.rglob("*.json"))) >= 3):
            assert child.poll() is None, "the run ended before the doc step wrote 3 batches"
            assert time.monotonic() < deadline, "no doc step checkpoints within 5 minutes"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)  # kill -9 mid-step
    finally:
        child.wait()
    assert not (killed / "doc_refined_shard" / f"{SHARD}.parquet").exists(), \
        "the doc step finished before it was killed"
    finished = len(list(folder.rglob("*.json")))  # batches done before the kill

    with dg.instance_for_test() as instance:
        defs = resume_worker.build(str(killed), str(trained_model))
        assert resume_worker.materialize(defs, instance).success
        meta = definitions.latest_metadata(instance, "doc_refined_shard", SHARD)
    total = pl.read_parquet(killed / "raw_shard" / f"{SHARD}.parquet").height
    # every batch finished before the kill was taken from its checkpoint; the rest generated
    assert meta["batches_resumed"] == finished and meta["prompts_resumed"] == 2 * finished
    assert meta["prompts_generated"] == total - 2 * finished
    # a finished shard keeps its programs: computing it again asks the model nothing
    assert len(list(folder.iterdir())) == 1

    with dg.instance_for_test() as instance:
        assert resume_worker.materialize(resume_worker.build(str(clean), str(trained_model)),
                                         instance).success
    for asset in ("doc_refined_shard", "chunk_refined_shard", "clean_shard"):
        assert pl.read_parquet(killed / asset / f"{SHARD}.parquet").equals(
            pl.read_parquet(clean / asset / f"{SHARD}.parquet")), asset
