"""The quality assets in a temporary instance: refiner_evaluation, classifier_model, and the
per-shard refinement preview of clean_shard."""

import json
import re

import dagster as dg
import pytest

from prox_dagster import definitions
from prox_dagster.evaluation import CONTENT_LABELS, IGNORED_LABELS, load_labelled_set
from prox_dagster.refiners.classifier import ClassifierModel
from prox_dagster.sample import LABELLED_SET, write_sample_crawl
from prox_dagster.resources import ClassifierSettings, ProgramPolicy, RefinerResource

pytestmark = pytest.mark.integration


@pytest.fixture
def crawl(tmp_path):
    write_sample_crawl(tmp_path / "data", n_shards=2, docs_per_shard=20)
    return tmp_path / "data"


def _run(defs, instance, asset):
    return defs.resolve_job_def(f"{asset}_job").execute_in_process(
        instance=instance, run_config=definitions.run_config(), raise_on_error=False)


def _materialize(defs, instance, asset):
    assert _run(defs, instance, asset).success
    return definitions.latest_metadata(instance, asset)


def test_evaluation_then_training_then_a_new_refiner_version(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    version = RefinerResource().version
    evaluation = _materialize(defs, instance, "refiner_evaluation")
    assert evaluation["refiner_version"] == version
    assert evaluation["sets"] == "sample-crawl.labelled" and evaluation["documents"] == 40
    assert "| set | system |" in evaluation["report"] and "keep-F1 per set" in \
        evaluation["report"]
    assert 0 < evaluation["overall_keep_f1"] <= 1
    assert evaluation["keep_f1/sample-crawl.labelled"] == evaluation["overall_keep_f1"]
    saved = json.loads((crawl / "evaluation" / (evaluation["json"].rsplit("/", 1)[-1]))
                       .read_text())
    assert saved["refiner_version"] == version and saved["sets"][0]["docs"] == 40
    # the evaluation's code version leads with the refiner version and covers what else its
    # numbers depend on: a new refiner, chunk budget, policy or labelled set makes it stale
    node = defs.resolve_assets_def("refiner_evaluation")
    loaded = node.code_versions_by_key[node.key]
    assert loaded.startswith(f"{version}|evaluation@")
    for change in ({"refiner": RefinerResource(max_chunk_tokens=800)},
                   {"policy": ProgramPolicy(min_words=30)}):
        other = definitions.build_definitions(data_dir=crawl, **change)
        moved = other.resolve_assets_def("refiner_evaluation")
        assert moved.code_versions_by_key[moved.key] != loaded, change

    trained = _materialize(defs, instance, "classifier_model")
    model = ClassifierModel(trained["path"])
    assert trained["sha256"] == model.sha256 and model.sha256[:12] in trained["path"]
    assert trained["training_sets"] == "sample-crawl.labelled"
    assert f"PROX_CLASSIFIER_MODEL={trained['path']}" in trained["use_with"]
    [row] = [line for line in trained["content_shares"].splitlines()
             if line.startswith("| sample-crawl.labelled |")]
    estimated, labelled = (float(cell) for cell in row.strip("| ").split(" | ")[1:])
    pages = [page for page in load_labelled_set(crawl / "labels" / LABELLED_SET).documents
             if page.line_labels]
    marks = [mark for page in pages for line, mark in zip(page.text.split("\n"),
                                                          page.line_labels)
             if line.strip() and mark not in IGNORED_LABELS]
    assert labelled == round(sum(m in CONTENT_LABELS for m in marks) / len(marks), 3)
    assert 0 < estimated < 1
    assert "One training set: its estimate comes from the model trained on it" in \
        trained["content_shares"]
    assert "One training set: no set was held out" in trained["operating_points"]
    assert trained["preset"] == "balanced"

    retrained = definitions.build_definitions(
        data_dir=crawl,
        refiner=RefinerResource(classifier=ClassifierSettings(model=trained["path"])))
    new_version = retrained.resources["refiner"].version
    assert new_version != version and model.sha256 != ClassifierModel(
        RefinerResource().get().model.path).sha256
    second = _materialize(retrained, instance, "refiner_evaluation")
    assert second["refiner_version"] == new_version
    records = instance.fetch_materializations(dg.AssetKey("refiner_evaluation"), limit=10)
    versions = [r.asset_materialization.metadata["refiner_version"].value
                for r in records.records]
    assert versions == [new_version, version]  # one materialization per refiner version


def test_classifier_model_takes_its_trade_off_as_run_config_and_shows_it(crawl, instance,
                                                                         tmp_path):
    from prox_dagster.resources import LabelledSets

    write_sample_crawl(tmp_path / "other", n_shards=2, docs_per_shard=20, seed=7)
    second = tmp_path / "second-crawl.jsonl"
    second.write_bytes((tmp_path / "other" / "labels" / LABELLED_SET).read_bytes())
    defs = definitions.build_definitions(data_dir=crawl, labelled_sets=LabelledSets(
        training=[str(crawl / "labels" / LABELLED_SET), str(second)],
        model_dir=str(tmp_path / "models")))
    job = defs.resolve_job_def("classifier_model_job")

    def train(**config):
        return job.execute_in_process(instance=instance, raise_on_error=False, run_config={
            **definitions.run_config(), "ops": {"classifier_model": {"config": config}}})

    assert train(preset="recall", min_good_kept=0.8).success
    meta = definitions.latest_metadata(instance, "classifier_model")
    assert meta["preset"] == "recall"
    spec = json.loads(open(meta["path"]).read())
    settings = spec["training"]["settings"]
    assert (settings["preset"], settings["min_good_kept"]) == ("recall", 0.8)
    assert ClassifierModel(meta["path"]).preset == "recall"
    # the table: one row per preset, the default marked, each with its thresholds and what it
    # does to each training set out of fold, as the model file records them
    table = meta["operating_points"].splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header == ["preset", "sentences from", "short lines from", "sample-crawl.labelled",
                      "second-crawl"]
    for preset, point in spec["operating_points"].items():
        [row] = [line for line in table if line.startswith(f"| {preset} |")
                 or line.startswith(f"| **{preset} (default)** |")]
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0].startswith("**") == (preset == "recall")
        assert cells[1:3] == [f"{point['sentence_threshold']:.2f}",
                              f"{point['short_threshold']:.2f}"]
        measured = spec["training"]["operating_points"][preset]["second-crawl"]
        assert cells[4] == (f"{measured['sentence_recall']:.3f} / "
                            f"{measured['gain_over_naive']:+.3f}")

    # a setting out of range fails before any set is read, naming the setting
    failed = train(preset="bold")
    assert not failed.success
    error = failed.get_step_failure_events()[0].event_specific_data.error
    assert "preset must be one of precision, balanced, recall, not 'bold'" in \
        (error.cause or error).message


def test_a_set_without_labels_fails_the_evaluation_naming_it(crawl, instance, tmp_path):
    from prox_dagster.resources import LabelledSets

    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "a", "text": "no labels"}) + "\n")
    defs = definitions.build_definitions(
        data_dir=crawl, labelled_sets=LabelledSets(evaluation=[str(plain)]))
    result = _run(defs, instance, "refiner_evaluation")
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    message = (error.cause or error).message
    assert "plain.jsonl" in message and "no document has line labels" in message


def test_clean_shard_shows_dropped_documents_and_removed_lines(crawl, instance):
    defs = definitions.build_definitions(data_dir=crawl)
    definitions.register_new_shards(defs, instance)
    assert definitions.materialize_shard(defs, instance, "sample-crawl.00000").success
    meta = definitions.latest_metadata(instance, "clean_shard", "sample-crawl.00000")
    preview = meta["refinement_preview"]
    assert "**Dropped documents**" in preview and "**Removed lines**" in preview
    # the doc program's reason (this shard's dropped page is a repetitive one)
    assert re.search(r"`drop_doc\(\)`: classifier (p_good=|repeated passages )0\.\d\d", preview)
    assert "`remove_lines(line_start=" in preview
    assert "none removed" not in preview
