"""The UI as a user sees it: `dagster dev` on a fresh instance, a backfill launched through the
UI's GraphQL API and run by the real daemon, and screenshots in headless Chromium."""

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

pytestmark = [pytest.mark.integration, pytest.mark.ui]


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="needs Debian's chromium (apt-get install chromium; .ci/run does)")
def test_a_backfill_from_the_ui_runs_in_batches_and_shows_its_partitions(tmp_path):
    import ui_tour

    summary = ui_tour.tour(tmp_path / "shots", shards=4, shards_per_run=2)
    assert summary["status"] == "COMPLETED_SUCCESS", open(summary["log"]).read()[-3000:]
    # four shards in runs of two, each run carrying its range through every stage
    assert len(summary["runs"]) == 2
    assert all(run["status"] == "SUCCESS" for run in summary["runs"])
    ranges = sorted(tuple(sorted(run["range"])) for run in summary["runs"])
    assert ranges == [tuple(summary["partitions"][:2]), tuple(summary["partitions"][2:])]
    for asset, partitions in summary["materialized"].items():
        assert partitions == summary["partitions"], asset
    # the refiner evaluation, launched from the UI's API, says in the UI what it measured
    evaluation = summary["evaluation"]
    assert evaluation["status"] == "SUCCESS"
    shown = evaluation["metadata"]
    assert shown["refiner_version"].startswith("classifier:classifier-web-v7@")
    assert "| set | system |" in shown["report"] and "keep-F1 per set" in shown["report"]
    assert 0 < shown["overall_keep_f1"] <= 1
    assert "sentence recall" in shown["report"] and 0 < shown["overall_sentence_recall"] <= 1
    assert "**lines**" in shown["report"] and "**documents**" in shown["report"]
    # the classifier trained from the UI's API with the launchpad's config, which it shows
    training = summary["training"]
    assert training["status"] == "SUCCESS"
    shown = training["metadata"]
    assert shown["preset"] == "precision" and shown["sha256"][:12] in shown["path"]
    assert "One training set: no set was held out" in shown["operating_points"]
    # the training ablation on the pre-training set, launched from the UI's API: its table,
    # verdicts and curves as the browser renders them on the asset's page
    assert summary["pretraining"]["status"] == "SUCCESS"
    # counts and the manifest's shards are tables the UI draws, a row per value, cells as text
    counts = summary["partition_metadata_text"]
    assert "status_counts\tcount\n" in counts and "\nkept\t" in counts
    manifest = summary["pretraining_page_text"]
    assert "shard\tstatus\tformat\tdtype\tfiles\tdocuments\ttokens\tlater_copies" in manifest
    for shard in summary["partitions"]:
        assert f"\n{shard}\tcurrent\t" in manifest, shard
    ablation = summary["ablation"]
    assert ablation["status"] == "SUCCESS"
    shown = ablation["metadata"]
    assert shown["config"] == "tiny" and shown["read_as"] == "megatron"
    assert shown["refiner_version"].startswith("classifier:classifier-web-v7@")
    assert shown["tokens/raw"] > shown["tokens/refined"] > 0
    page = summary["ablation_page_text"]
    for arm in ("raw", "refined", "naive"):
        assert f"val_loss/{arm}" in page, arm
    # the report a user opens with [Show Markdown]: the table of arms and the verdicts
    report = summary["ablation_report_text"]
    assert "3 seeds per arm, 1,024 training tokens each (config tiny" in report
    assert "Verdicts" in report and "\nrefined\t" in report and "\nnaive\t" in report
    # every shard check's Partitions tab: each shard Passed, none Missing (asked of the UI's API)
    assert len(summary["check_partitions"]) == 14  # 6 stages' `current` among them
    for check, shown in summary["check_partitions"].items():
        assert shown["succeeded"] == summary["partitions"], check
        assert not shown["failed"] and not shown["inProgress"], check
    # and as the browser renders it, after clicking the check's Partitions tab
    text = summary["check_page_text"]
    assert "Passed (4)" in text and "Missing (0)" in text and "Failed (0)" in text
    for name, path in summary["screenshots"].items():
        data = Path(path).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000, name  # not blank
    # another chunk budget: the audit launched from the UI tells each stage's `current` check,
    # and the check names the setting with its old and new values, not two hashes
    # (the stages after it stay current until the chunks they read change)
    stale = summary["stale_checks"]
    assert stale["chunked_shard:current"]["failed"] == summary["partitions"]
    for asset in ("raw_shard", "doc_refined_shard", "chunk_refined_shard", "clean_shard",
                  "tokenized_shard"):
        assert stale[f"{asset}:current"]["succeeded"] == summary["partitions"], asset
    assert "Failed (4)" in summary["stale_check_text"]
    assert "max_chunk_tokens 1500 → 800" in summary["stale_history_text"]
    # and the asset graph's node says so above the partitions
    node = summary["stale_graph_text"].split("chunked_shard\nLatest event", 1)[1]
    assert node.split("Partitions", 1)[0].split("Asset checks", 1)[1].strip() == "0 / 1 Passed"
