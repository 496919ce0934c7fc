"""The training ablation: arms read by megatron-core, the same budget for every arm, a validation
set checked against every arm's training text, verdicts over seeds, and the Dagster asset."""

import json
import math

import dagster as dg
import numpy as np
import pytest

from prox_dagster import definitions
from prox_dagster.ablation import (CONFIGS, AblationError, ArmResult, SeedRun, blocks_of,
                                   deduplicated_validation, gold_text, load_config, run_ablation,
                                   schedule, text_arm, verdicts)
from prox_dagster.ablation_pages import jsonl_arm, parse_arm
from prox_dagster.ablation_report import ablation_markdown, svg_plot
from prox_dagster.sample import sample_documents, write_sample_crawl
from prox_dagster.tokenization import rust_tokenizer
from manifests import read_manifest

pytest.importorskip("megatron.core", reason="megatron-core is not installed (pip install "
                                            "-e '.[train]')")

TEXTS = [f"Document {i} says that the river {w} runs past the old mill every spring."
         for i, w in enumerate(["quietly", "slowly", "north", "south", "west", "east"] * 6)]


def _docs(texts):
    return [(str(i), t) for i, t in enumerate(texts)]


@pytest.mark.parametrize("fmt", ["megatron", "litgpt"])
def test_the_trainers_libraries_read_exactly_the_tokens_written(tmp_path, sample_tokenizer,
                                                                 fmt):
    arm = text_arm("raw", _docs(TEXTS), tmp_path, sample_tokenizer, "raw text", fmt=fmt,
                   chunk_size=17 * 8)
    # what the tokenizer gives, independently: each text's ids and EOS, back to back
    backend = rust_tokenizer(sample_tokenizer)
    stream = np.concatenate([backend.encode(t, add_special_tokens=False).ids
                             + [sample_tokenizer.eos_token_id] for t in TEXTS])
    assert arm.tokens == len(stream) and arm.documents == len(TEXTS) and arm.fmt == fmt
    blocks = blocks_of(arm, seq_len=16)
    if fmt == "megatron":  # megatron-core: neighbouring blocks share one token
        assert type(blocks).__name__ == "MegatronBlocks"
        assert blocks.blocks == (len(stream) - 1) // 16
        starts = [i * 16 for i in range(blocks.blocks)]
    else:  # litdata: whole blocks of 17 within each chunk of 136 tokens, none across chunks
        assert type(blocks).__name__ == "LitdataBlocks"
        whole = len(stream) // 136 * 8 + len(stream) % 136 // 17
        assert blocks.blocks == whole
        starts = [i // 8 * 136 + i % 8 * 17 for i in range(whole)]
    for index in (0, 1, blocks.blocks // 2, blocks.blocks - 1):
        assert blocks.block(index).tolist() == stream[starts[index]:starts[index] + 17].tolist()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("fmt, damaged, reader", [
    ("megatron", "raw.idx", r"IndexedDataset rejects .*raw\.idx"),
    ("litgpt", "raw/index.json", r"StreamingDataset rejects .*raw/index\.json")])
def test_a_token_file_the_reader_rejects_fails_naming_it(tmp_path, sample_tokenizer, fmt,
                                                         damaged, reader):
    arm = text_arm("raw", _docs(TEXTS), tmp_path, sample_tokenizer, "raw text", fmt=fmt)
    path = tmp_path / damaged
    path.write_bytes(b"NOTMEGA" + path.read_bytes()[7:])
    with pytest.raises(AblationError, match=reader):
        blocks_of(arm, seq_len=16)


def test_an_arm_without_tokens_fails_before_training(tmp_path, sample_tokenizer):
    with pytest.raises(AblationError, match="'naive'.*nothing to train on"):
        text_arm("naive", [("a", None), ("b", "  \n ")], tmp_path, sample_tokenizer,
                 "naive line filter")


def test_every_arm_gets_the_same_budget_and_a_short_arm_repeats():
    order, epochs = schedule(blocks=7, needed=20, seed=3)
    assert len(order) == 20 and epochs == 3
    # whole epochs: each block once per epoch, in a seeded order
    assert sorted(order[:7].tolist()) == list(range(7))
    assert sorted(order[7:14].tolist()) == list(range(7))
    assert order.tolist() == schedule(7, 20, 3)[0].tolist()
    assert order.tolist() != schedule(7, 20, 4)[0].tolist()
    assert schedule(blocks=50, needed=20, seed=0)[1] == 1


def test_validation_lines_in_the_training_text_are_removed_and_counted():
    training = ["The committee approved the new budget for the coming fiscal year today.\n"
                "Share this page"]
    validation = [
        "The committee approved the new budget for the coming fiscal year today.\n"  # exact
        "Officials said the committee approved the new budget for the coming fiscal year.\n"
        "A completely different sentence about migrating birds and their long routes.\n"
        "share THIS page!"]  # the same words: exact
    checked = deduplicated_validation(validation, training, max_overlap=0.9)
    assert (checked.lines, checked.removed_exact, checked.removed_near) == (4, 2, 1)
    assert checked.texts == ["A completely different sentence about migrating birds and their "
                             "long routes."]
    assert 0.5 < checked.removed_share < 0.9
    with pytest.raises(AblationError, match="overlaps the training text: 2 of its 4 lines"):
        deduplicated_validation(validation, training, max_overlap=0.2)


def test_gold_text_comes_from_clean_text_labels_or_plain_text():
    assert gold_text({"text": "raw", "clean_text": "gold"}) == "gold"
    assert gold_text({"text": "nav\nbody\nfooter", "line_labels_derived": "BMB"}) == "body"
    assert gold_text({"text": "a\nb", "line_labels": "01"}) == "b"
    assert gold_text({"text": "a\nb", "line_labels": "0"}) is None  # labels of another text
    assert gold_text({"text": "plain text"}) == "plain text"
    assert gold_text({"text": "a page", "label": 1}) is None  # a document label is no gold


def _arm(name, losses):
    runs = [SeedRun(seed, loss, loss / math.log(2) / 4, [(1, loss)], [(1, loss)], 0.0)
            for seed, loss in enumerate(losses)]
    return ArmResult(name, name, 10, 100, 5, 1, runs)


def test_an_arm_beats_another_only_beyond_twice_the_pooled_std():
    raw, refined, naive = (_arm("raw", [5.0, 5.1, 5.2]), _arm("refined", [4.6, 4.7, 4.8]),
                           _arm("naive", [4.95, 5.05, 5.15]))
    by_pair = {(v["a"], v["b"]): v for v in verdicts([raw, refined, naive])}
    assert by_pair["refined", "raw"]["beats"]  # gap 0.4 > 2 × 0.1
    assert by_pair["refined", "raw"]["gap"] == pytest.approx(0.4)
    assert by_pair["refined", "raw"]["pooled_std"] == pytest.approx(0.1)
    assert not by_pair["naive", "raw"]["beats"]  # gap 0.05 < 0.2
    assert not by_pair["raw", "refined"]["beats"]


def test_a_further_arm_is_named_and_read_from_jsonl(tmp_path, sample_tokenizer):
    path = tmp_path / "other.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n"
                            for i, t in enumerate(TEXTS)))
    arm = jsonl_arm(*parse_arm(f"other-refiner={path}"), tmp_path, sample_tokenizer)
    assert (arm.name, arm.documents, arm.source) == ("other-refiner", len(TEXTS), str(path))
    with pytest.raises(AblationError, match="expected NAME=PATH"):
        parse_arm("other.jsonl")
    with pytest.raises(AblationError, match="none of"):
        jsonl_arm("raw", path, tmp_path, sample_tokenizer)


def test_configs_need_three_seeds_and_sane_sizes(tmp_path):
    with pytest.raises(AblationError, match="at least 3 distinct seeds"):
        load_config("tiny", seeds=(0, 1))
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"layers": 1, "steps": 5, "seeds": [1, 2, 3]}))
    mine = load_config(str(path))
    assert (mine.name, mine.layers, mine.steps, mine.seeds) == ("mine", 1, 5, (1, 2, 3))
    assert mine.hidden == CONFIGS["cpu"].hidden
    path.write_text(json.dumps({"layer": 1}))
    with pytest.raises(AblationError, match="unknown fields \\['layer'\\]"):
        load_config(str(path))
    with pytest.raises(AblationError, match="neither one of"):
        load_config("huge")


@pytest.mark.lm
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["megatron", "litgpt"])
def test_tiny_ablation_trains_every_arm_and_seed_through_the_readers(tmp_path, sample_tokenizer,
                                                                     fmt):
    docs = sample_documents(24, seed=5, shard="abl")
    raw = text_arm("raw", [(d.id, d.text) for d in docs], tmp_path, sample_tokenizer, "raw text",
                   fmt=fmt)
    clean = text_arm("clean", [(d.id, gold_text({"text": d.text, "line_labels": d.line_labels}))
                               for d in docs if not d.junk], tmp_path, sample_tokenizer,
                     "labelled content", fmt=fmt)
    held = [d for d in sample_documents(40, seed=77, shard="held") if not d.junk]
    validation = [gold_text({"text": d.text, "line_labels": d.line_labels}) for d in held]
    config = load_config("tiny", max_overlap=0.95)
    result = run_ablation([raw, clean], validation, sample_tokenizer, config)
    report = result.to_json()
    assert [a["name"] for a in report["arms"]] == ["raw", "clean"]
    for arm in report["arms"]:
        assert arm["format"] == fmt
        assert [r["seed"] for r in arm["runs"]] == [0, 1, 2]
        assert all(len(r["curve"]) == config.evals for r in arm["runs"])
        losses = [r["val_loss"] for r in arm["runs"]]
        # a random model's loss is near log(vocab); a few steps move it, seeds differ
        assert all(0 < loss < math.log(len(sample_tokenizer)) + 1 for loss in losses)
        assert len(set(losses)) == 3
        assert arm["bits_per_byte_mean"] > 0
    assert report["config"]["train_tokens"] == config.steps * config.batch_size * config.seq_len
    # the validation lost the lines both arms train on, and said how many
    assert report["validation"]["removed_exact"] > 0
    # the same seed, arm and data give the same loss again
    again = run_ablation([raw, clean], validation, sample_tokenizer, config)
    assert again.to_json()["arms"][0]["val_loss_mean"] == report["arms"][0]["val_loss_mean"]
    markdown = ablation_markdown(report, "plot.svg")
    assert "| raw |" in markdown and "| clean |" in markdown and "](plot.svg)" in markdown
    # one line per arm, through one point per evaluation
    svg = svg_plot(report)
    assert svg.count("<polyline") == 2 and svg.count(",", svg.index("points=")) >= config.evals


@pytest.mark.lm
@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["megatron", "litgpt"])
def test_the_ablation_asset_compares_the_sets_arms_in_the_ui_metadata(tmp_path, instance, fmt):
    data = tmp_path / "data"
    write_sample_crawl(data, n_shards=2, docs_per_shard=10)
    defs = definitions.build_definitions(data_dir=data)
    definitions.register_new_shards(defs, instance)
    megatron = {"output_format": fmt, "litgpt_chunk_size": 4096}
    assert definitions.materialize_shards(defs, instance, "sample-crawl.00000",
                                          "sample-crawl.00001", token_files=megatron).success
    assert definitions.materialize_pretraining_set(defs, instance, token_files=megatron).success
    # a further arm: the crawl's labelled main content, as another refiner might have left it
    gold = tmp_path / "gold.jsonl"
    records = [json.loads(line) for line in
               (data / "labels" / "sample-crawl.labelled.jsonl").read_text().splitlines()]
    gold.write_text("".join(json.dumps({"id": r["id"], "text": gold_text(r) or ""}) + "\n"
                            for r in records))
    job = defs.resolve_job_def("ablation_job")
    result = job.execute_in_process(instance=instance, raise_on_error=False, run_config={
        **definitions.run_config(True, megatron),
        "ops": {"ablation": {"config": {"config": "tiny", "arms": [f"gold={gold}"]}}}})
    assert result.success
    meta = definitions.latest_metadata(instance, "ablation")
    manifest = read_manifest(data)
    # the refined arm is the set's own files, token for token
    assert meta["tokens/refined"] == manifest["total_tokens"] and meta["read_as"] == fmt
    assert meta["tokens/raw"] > meta["tokens/refined"] > 0
    assert {"val_loss/raw", "val_loss/refined", "val_loss/naive"} <= set(meta)
    assert meta["refiner_version"] == manifest["shards"][0]["refiner_versions"][0]
    saved = json.loads(open(meta["json"]).read())
    assert [a["name"] for a in saved["arms"]] == ["raw", "refined", "naive", "gold"]
    assert 0 < meta["tokens/gold"] < meta["tokens/raw"]
    assert saved["validation"]["documents"] > 0
    assert "| refined |" in meta["report"]
    assert "data:image/svg+xml;base64," in meta["report"] and meta["plot"].endswith(".svg")

    # validation text that every arm trains on is refused, before any training
    raw_labels = str(data / "labels" / "sample-crawl.labelled.jsonl")
    refused = job.execute_in_process(instance=instance, raise_on_error=False, run_config={
        **definitions.run_config(True, megatron),
        "ops": {"ablation": {"config": {"config": "tiny", "validation": [raw_labels]}}}})
    assert not refused.success
    failure = next(e for e in refused.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "overlaps the training text" in failure.event_specific_data.error.message
