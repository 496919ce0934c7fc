"""The model runs once per content: for every setting of the staleness tables, how many prompts
the refiner is asked to write programs for when the setting changes (and changes back)."""

import shutil
from collections import Counter

import pytest

from prox_dagster import definitions
from prox_dagster.refiners import BACKENDS, RulesConfig
from prox_dagster.refiners.classifier import ClassifierRefiner
from prox_dagster.sample import write_sample_crawl
from prox_dagster.tokenization import sample_tokenizer_path
from prox_dagster.resources import (CheckThresholds, ClassifierSettings, ProgramPolicy,
                                    RefinerResource)

pytestmark = pytest.mark.integration
SHARD = "sample-crawl.00000"
PROMPTS: Counter = Counter()


class CountedClassifier(ClassifierRefiner):
    """The shipped classifier refiner, counting the prompts it is asked for (the refiner
    boundary, where a GPU refiner's cost is), standing in for a model: its batches are
    checkpointed as a model's are."""

    calls_model = True

    def generate(self, prompts, *, level):
        PROMPTS[level] += len(prompts)
        return super().generate(prompts, level=level)


@pytest.fixture
def counted(monkeypatch):
    monkeypatch.setitem(BACKENDS, "classifier", lambda model=None, **options: CountedClassifier(
        model or None, RulesConfig(**options)))
    PROMPTS.clear()
    return PROMPTS


def test_only_the_refiner_and_what_its_model_sees_ask_the_model(tmp_path, instance, counted,
                                                                monkeypatch):
    write_sample_crawl(tmp_path, n_shards=1, docs_per_shard=12)
    copy = tmp_path / "sample-tokenizer-copy"  # the same tokenizer under another identity
    shutil.copytree(sample_tokenizer_path(), copy)
    defaults = definitions.build_definitions(data_dir=tmp_path)
    definitions.register_new_shards(defaults, instance)

    def run(change: dict, token_format: str = "parquet") -> dict:
        counted.clear()
        monkeypatch.setenv("PROX_TOKEN_FORMAT", token_format)
        defs = definitions.build_definitions(data_dir=tmp_path, **change)
        result = definitions.materialize_shard(defs, instance, SHARD)
        [row] = definitions.lineage_report(defs, instance)
        assert row["status"] in ("current", "failed"), (change, row)
        computed = {e.asset_key.to_user_string() for e in
                    result.get_asset_materialization_events()
                    if not e.materialization.metadata["cached"].value}
        return {"doc": counted["doc"], "chunk": counted["chunk"], "computed": computed}

    first = run({})
    assert first["doc"] == 12 and first["chunk"] > 0

    # nothing the model sees changes: no prompt, whatever else is recomputed or judged again
    unseen = [
        ({"checks": CheckThresholds(max_quarantine_share=0.4)}, set()),
        ({"checks": CheckThresholds(min_doc_parse_rate=0.95)}, set()),
        ({"checks": CheckThresholds(min_chunk_parse_rate=0.95)}, set()),
        ({"checks": CheckThresholds(min_token_retention=0.1)}, set()),
        ({"checks": CheckThresholds(max_token_retention=1.0)}, set()),
        ({"checks": CheckThresholds(min_kept_share=0.1)}, set()),
        ({"policy": ProgramPolicy(min_words=30)}, {"clean_shard"}),
        ({"policy": ProgramPolicy(doc_decision="substring")}, {"clean_shard"}),
        ({"tokenizer": str(copy)}, {"clean_shard", "tokenized_shard"}),
        # the chunks come out the same: the chunk refiner's input did not change
        ({"refiner": RefinerResource(tokenizer=str(copy))}, {"chunked_shard"}),
    ]
    for change, recomputed in unseen:
        seen = run(change)
        assert (seen["doc"], seen["chunk"]) == (0, 0), change
        assert recomputed <= seen["computed"] <= recomputed | {"clean_shard", "tokenized_shard"}, \
            (change, seen["computed"])
    seen = run({}, token_format="megatron")  # (and the chunk tokenizer back to `sample`)
    assert (seen["doc"], seen["chunk"]) == (0, 0)
    assert seen["computed"] == {"chunked_shard", "tokenized_shard"}

    # what the chunk model sees changes: chunk prompts only
    budget = run({"refiner": RefinerResource(max_chunk_tokens=300)})
    assert budget["doc"] == 0 and budget["chunk"] > first["chunk"]
    # another refiner: both levels
    other = run({"refiner": RefinerResource(
        classifier=ClassifierSettings(options={"min_words": 80}))})
    assert other["doc"] == 12 and other["chunk"] > 0
    # and back: the replaced output's programs were kept, so the model is asked nothing
    back = run({})
    assert (back["doc"], back["chunk"]) == (0, 0)
    assert {"doc_refined_shard", "chunk_refined_shard"} <= back["computed"]
