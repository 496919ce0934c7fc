"""Lineage audits from the Dagster instance: the CLI and the asset, on a real instance."""

import csv
import io
import json

import dagster as dg
import pytest

from prox_dagster import cli, definitions
from prox_dagster.sample import write_sample_crawl
from resources import CheckThresholds, RefinerResource

pytestmark = pytest.mark.integration
SHARDS = ["sample-crawl.00000", "sample-crawl.00001", "sample-crawl.00002",
          "sample-crawl.00003"]


@pytest.fixture
def audited(tmp_path, monkeypatch):
    """Shard 0 refined by the default refiner, shard 1 by another, shard 2 by the default but
    failing a check, shard 3 never refined."""
    data, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    write_sample_crawl(data, n_shards=4, docs_per_shard=6)
    monkeypatch.setenv("PROX_DATA_DIR", str(data))
    current = definitions.build_definitions(data_dir=data)
    other_refiner = RefinerResource(options={"min_words": 80})
    other = definitions.build_definitions(data_dir=data, refiner=other_refiner)
    strict = definitions.build_definitions(data_dir=data,
                                           checks=CheckThresholds(min_token_retention=0.99))
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        definitions.register_new_shards(current, instance)
        assert definitions.materialize_shard(current, instance, SHARDS[0]).success
        assert definitions.materialize_shard(other, instance, SHARDS[1]).success
        assert not definitions.materialize_shard(strict, instance, SHARDS[2]).success
        yield current, instance, home, RefinerResource().version, other_refiner.version


def test_report_says_who_refined_each_shard_and_what_is_stale(audited):
    defs, instance, _, version, other_version = audited
    rows = {row["shard"]: row for row in definitions.lineage_report(defs, instance)}
    assert list(rows) == SHARDS
    assert rows[SHARDS[0]]["status"] == "current"
    assert rows[SHARDS[0]]["doc_refiner_version"] == version
    assert rows[SHARDS[0]]["chunk_refiner_version"] == version
    assert rows[SHARDS[0]]["doc_model"] == rows[SHARDS[0]]["chunk_model"] == "classifier-web-v1"
    assert rows[SHARDS[0]]["checks_passed"] == 9 and rows[SHARDS[0]]["checks_failed"] == 0
    assert rows[SHARDS[1]]["status"] == "stale"
    assert rows[SHARDS[1]]["doc_refiner_version"] == other_version
    assert rows[SHARDS[2]]["failed_checks"] == "clean_shard:token_retention"
    assert rows[SHARDS[3]]["status"] == "unrefined" and rows[SHARDS[3]]["doc_model"] is None
    assert rows[SHARDS[0]]["doc_refined_at"].endswith("+00:00")

    by_other = definitions.lineage_report(defs, instance, refiner_version=other_version)
    assert [row["shard"] for row in by_other] == [SHARDS[1]]
    stale = definitions.lineage_report(defs, instance, status="stale")
    assert [row["shard"] for row in stale] == [SHARDS[1]]


def test_the_cli_answers_as_json_csv_and_table(audited, capsys):
    _, _, home, version, other_version = audited
    assert cli.main(["audit", "--dagster-home", str(home), "--format", "json",
                     "--refiner-version", other_version]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["shard"] for row in rows] == [SHARDS[1]] and rows[0]["status"] == "stale"

    assert cli.main(["audit", "--dagster-home", str(home), "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["shard"] for row in table] == SHARDS
    assert [row["status"] for row in table] == ["current", "stale", "current", "unrefined"]

    assert cli.main(["audit", "--dagster-home", str(home), "--status", "unrefined"]) == 0
    out = capsys.readouterr().out
    assert SHARDS[3] in out and SHARDS[0] not in out

    assert cli.main(["audit", "--dagster-home", str(home / "nowhere")]) == 2


def test_the_audit_asset_writes_the_report_for_the_ui(audited):
    defs, instance, _, version, _ = audited
    result = defs.resolve_job_def("lineage_audit_job").execute_in_process(instance=instance)
    assert result.success
    meta = definitions.latest_metadata(instance, "lineage_audit")
    assert meta["shards"] == 4 and meta["shards_stale"] == 1 and meta["shards_unrefined"] == 1
    assert meta["shards_with_failed_checks"] == 1
    assert meta["current_refiner_version"] == version
    assert SHARDS[1] in meta["report"] and "stale" in meta["report"]
    saved = json.loads(open(meta["json"]).read())
    assert [row["shard"] for row in saved] == SHARDS
