"""Lineage audits from the Dagster instance: the CLI and the asset, on a real instance."""

import csv
import io
import json

import dagster as dg
import pytest

from prox_dagster.assets.audit import RANGE_END, RANGE_START
from prox_dagster import cli, definitions
from prox_dagster.sample import write_sample_crawl
from prox_dagster.resources import CheckThresholds, ClassifierSettings, RefinerResource

pytestmark = pytest.mark.integration
SHARDS = ["sample-crawl.00000", "sample-crawl.00001", "sample-crawl.00002",
          "sample-crawl.00003"]
EMPTY = "sample-crawl.00004"


@pytest.fixture
def audited(tmp_path, monkeypatch):
    """Shard 0 refined by the default settings, shard 1 by another refiner, shard 2 with other
    check thresholds, shard 3 never; shard 4 is an empty file that fails a check."""
    data, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    write_sample_crawl(data, n_shards=4, docs_per_shard=6)
    (data / "raw" / f"{EMPTY}.jsonl").write_bytes(b"")
    monkeypatch.setenv("PROX_DATA_DIR", str(data))
    current = definitions.build_definitions(data_dir=data)
    other_refiner = RefinerResource(classifier=ClassifierSettings(options={"min_words": 80}))
    other = definitions.build_definitions(data_dir=data, refiner=other_refiner)
    strict = definitions.build_definitions(data_dir=data,
                                           checks=CheckThresholds(min_token_retention=0.99))
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        definitions.register_new_shards(current, instance)
        assert definitions.materialize_shard(current, instance, SHARDS[0]).success
        assert definitions.materialize_shard(other, instance, SHARDS[1]).success
        assert not definitions.materialize_shard(strict, instance, SHARDS[2]).success
        assert not definitions.materialize_shard(current, instance, EMPTY).success
        yield current, instance, home, RefinerResource().version, other_refiner.version


def test_report_says_what_is_current_stale_failed_or_missing_and_why(audited):
    defs, instance, _, version, other_version = audited
    rows = {row["shard"]: row for row in definitions.lineage_report(defs, instance)}
    assert list(rows) == [*SHARDS, EMPTY]
    assert rows[SHARDS[0]]["status"] == "current" and rows[SHARDS[0]]["reason"] == ""
    assert rows[SHARDS[0]]["doc_refiner_version"] == version
    assert rows[SHARDS[0]]["chunk_refiner_version"] == version
    assert rows[SHARDS[0]]["doc_model"] == rows[SHARDS[0]]["chunk_model"] == "classifier-web-v7"
    assert rows[SHARDS[0]]["checks_passed"] == 8 and rows[SHARDS[0]]["checks_failed"] == 0
    assert rows[SHARDS[0]]["doc_refined_at"].endswith("+00:00")
    assert rows[SHARDS[1]]["status"] == "stale"
    # the setting that changed, with its old and new values
    assert rows[SHARDS[1]]["reason"] == (f"doc_refined_shard: refiner {other_version} → "
                                         f"{version}")
    assert rows[SHARDS[1]]["doc_refiner_version"] == other_version
    # the stages the refiner shapes; the later ones follow once those are recomputed
    assert rows[SHARDS[1]]["stale_stages"] == "doc_refined_shard, chunk_refined_shard"
    # its clean output failed under other thresholds: not published, and to be judged again
    # with these (no recomputation), so stale; its failed check shows
    assert rows[SHARDS[2]]["status"] == "stale"
    assert rows[SHARDS[2]]["reason"] == ("clean_shard: checks judged with "
                                         "min_token_retention 0.99 → 0.05")
    assert rows[SHARDS[2]]["stale_stages"] == "clean_shard"
    assert rows[SHARDS[2]]["failed_checks"] == "clean_shard:token_retention"
    assert rows[SHARDS[3]]["status"] == "missing" and rows[SHARDS[3]]["doc_model"] is None
    assert rows[EMPTY]["status"] == "failed"
    assert rows[EMPTY]["reason"] == "raw_shard:has_documents failed"

    by_other = definitions.lineage_report(defs, instance, refiner_version=other_version)
    assert [row["shard"] for row in by_other] == [SHARDS[1]]
    stale = definitions.lineage_report(defs, instance, status="stale")
    assert [row["shard"] for row in stale] == [SHARDS[1], SHARDS[2]]


def test_a_run_in_flight_and_a_cancelled_one_are_reported_as_such(audited):
    defs, instance, _, _, _ = audited
    job = defs.resolve_job_def("refine_shard_job")
    for status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELED):
        run = instance.create_run_for_job(
            job, run_config=definitions.run_config(), status=status,
            tags={RANGE_START: SHARDS[2] if status.value == "STARTED" else SHARDS[0],
                  RANGE_END: SHARDS[3] if status.value == "STARTED" else SHARDS[1]})
        if status == dg.DagsterRunStatus.STARTED:
            started = run.run_id
    rows = {row["shard"]: row for row in definitions.lineage_report(defs, instance)}
    assert rows[SHARDS[3]]["status"] == "running" and rows[SHARDS[3]]["in_flight_run"] == started
    assert rows[SHARDS[2]]["status"] == "running"
    # the cancelled run changes nothing: what is stored says what the shards are
    assert rows[SHARDS[0]]["status"] == "current" and rows[SHARDS[0]]["in_flight_run"] is None
    assert rows[SHARDS[1]]["status"] == "stale"


def test_the_cli_answers_as_json_csv_and_table(audited, capsys):
    _, _, home, version, other_version = audited
    assert cli.main(["audit", "--dagster-home", str(home), "--format", "json",
                     "--refiner-version", other_version]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["shard"] for row in rows] == [SHARDS[1]] and rows[0]["status"] == "stale"

    assert cli.main(["audit", "--dagster-home", str(home), "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["shard"] for row in table] == [*SHARDS, EMPTY]
    assert [row["status"] for row in table] == ["current", "stale", "stale", "missing", "failed"]

    assert cli.main(["audit", "--dagster-home", str(home), "--status", "missing"]) == 0
    out = capsys.readouterr().out
    assert SHARDS[3] in out and SHARDS[0] not in out

    assert cli.main(["audit", "--dagster-home", str(home / "nowhere")]) == 2


def test_the_audit_asset_writes_the_report_for_the_ui(audited):
    defs, instance, _, version, other_version = audited
    result = defs.resolve_job_def("lineage_audit_job").execute_in_process(instance=instance)
    assert result.success
    meta = definitions.latest_metadata(instance, "lineage_audit")
    assert meta["shards"] == 5 and meta["shards_stale"] == 2 and meta["shards_missing"] == 1
    assert meta["shards_failed"] == 1 and meta["shards_current"] == 1
    assert meta["shards_with_failed_checks"] == 2
    assert meta["current_refiner_version"] == version
    shown = {r.data["shard"]: r.data for r in meta["report"].records}
    assert list(shown) == [*SHARDS, EMPTY] and meta["report_rows_shown"] == len(shown)
    assert f"refiner {other_version}" in shown[SHARDS[1]]["reason"]
    saved = json.loads(open(meta["json"]).read())
    assert [row["shard"] for row in saved] == [*SHARDS, EMPTY]


@pytest.mark.parametrize("backend", ["rules", "classifier"])
def test_the_cli_answers_in_every_format_with_every_resource_set_by_environment(
        audited, capsys, monkeypatch, backend):
    """Every variable the resources read set at once (each field then an `EnvVar`, which the
    CLI must resolve before reading it): every format answers, the table names the refiner."""
    from prox_dagster import environment
    from prox_dagster.refiners.classifier import default_model_path
    from prox_dagster.resources.refiner import field_default

    _, _, home, _, _ = audited
    values = {"backend": backend, "doc_model": "", "chunk_model": "", "revision": "",
              "tokenizer": "", "model": str(default_model_path()),
              "base_url": "http://127.0.0.1:9", "api_key": "sk-test-not-a-key",
              "max_prompt_tokens": "2048"}
    fields = 0
    for variable in environment.VARIABLES.values():
        for path in variable.fields:
            fields += 1
            value = values.get(path.rpartition(".")[2], field_default(path))
            if value in ("", None, {}):
                continue  # unset: the default, as an operator leaves it
            text = json.dumps(value) if isinstance(value, list) else str(value)
            monkeypatch.setenv(variable.name, text)
    assert fields >= 20
    for variable, value in {"PROX_TOKEN_FORMAT": "megatron", "PROX_SHARDS_PER_RUN": "8",
                            "PROX_REFINE_CRON": "*/5 * * * *", "PROX_EXECUTOR": "in_process",
                            "PROX_TOKENIZER": "sample"}.items():
        monkeypatch.setenv(variable, value)
    for fmt in ("table", "json", "csv"):
        assert cli.main(["audit", "--dagster-home", str(home), "--format", fmt]) == 0, fmt
        out = capsys.readouterr().out
        if fmt == "table":
            assert f"current refiner {backend}:" in " ".join(out.split())
        elif fmt == "json":
            assert len(json.loads(out)) == len(SHARDS) + 1
        else:
            assert len(list(csv.DictReader(io.StringIO(out)))) == len(SHARDS) + 1
