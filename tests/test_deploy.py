"""The deployment differs from the embedded demo by configuration only: the executor comes from
``PROX_EXECUTOR``, and a refiner step's pod, as dagster-k8s's own job builder builds it from
the step's tags, asks for the GPUs, nodes and tolerations the refiner settings name."""

import json

import dagster as dg
import pytest

from prox_dagster import definitions
from prox_dagster.resources import RefinerResource

pytest.importorskip("dagster_k8s", reason="dagster-k8s is in the dev extra (make install)")


def _pod(defs: dg.Definitions, asset: str):
    """The pod spec dagster-k8s builds for ``asset``'s step (what ``k8s_job_executor``'s step
    handler does with a step's ``dagster-k8s/config`` tag)."""
    from dagster_k8s.job import (DagsterK8sJobConfig, construct_dagster_k8s_job,
                                 get_user_defined_k8s_config)

    tags = defs.resolve_assets_def(asset).op.tags
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="registry.example/prox-dagster:1",
                            dagster_home="/opt/dagster/dagster_home",
                            instance_config_map="dagster-instance"),
        ["dagster", "api", "execute_step"], "dagster-step-test",
        user_defined_k8s_config=get_user_defined_k8s_config(tags))
    return job.spec.template.spec


def test_gpu_steps_get_gpu_pods_by_configuration_only(tmp_path, tiny_model, monkeypatch):
    from dagster_k8s import k8s_job_executor

    for name, value in {
            "PROX_EXECUTOR": "k8s", "PROX_REFINER_BACKEND": "vllm",
            "PROX_DOC_MODEL": str(tiny_model), "PROX_TENSOR_PARALLEL_SIZE": "2",
            "PROX_GPU_NODE_SELECTOR": "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3,pool=refine",
            "PROX_GPU_TOLERATIONS": json.dumps([{"key": "gpu", "operator": "Equal",
                                                 "value": "h100", "effect": "NoSchedule"}]),
    }.items():
        monkeypatch.setenv(name, value)
    defs = definitions.build_definitions(data_dir=tmp_path)
    for job in ("refine_shard_job", "pretraining_set_job"):
        assert defs.resolve_job_def(job).executor_def is k8s_job_executor
    for asset in ("doc_refined_shard", "chunk_refined_shard"):
        pod = _pod(defs, asset)
        [container] = pod.containers
        assert container.resources.limits == {"nvidia.com/gpu": "2"}  # tensor parallel 2
        assert container.resources.requests == {"nvidia.com/gpu": "2"}
        assert pod.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
                                     "pool": "refine"}
        assert [(t.key, t.operator, t.value, t.effect) for t in pod.tolerations] == [
            ("gpu", "Equal", "h100", "NoSchedule")]
    # a CPU stage's pod asks for no GPU and goes anywhere
    cpu = _pod(defs, "chunked_shard")
    assert not (cpu.containers[0].resources and cpu.containers[0].resources.limits)
    assert not cpu.node_selector and not cpu.tolerations


def test_the_embedded_default_runs_in_process_and_cpu_refiners_ask_for_no_gpu(tmp_path,
                                                                              monkeypatch):
    monkeypatch.delenv("PROX_EXECUTOR", raising=False)
    defs = definitions.build_definitions(data_dir=tmp_path)
    assert defs.resolve_job_def("refine_shard_job").executor_def is dg.in_process_executor
    assert "dagster-k8s/config" not in defs.resolve_assets_def("doc_refined_shard").op.tags
    # the default GPU toleration is the taint GPU node pools carry
    tags = RefinerResource(backend="hf", doc_model="m").op_tags()["dagster-k8s/config"]
    assert tags["pod_spec_config"] == {"tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    monkeypatch.setenv("PROX_GPU_NODE_SELECTOR", "no-equals-sign")
    with pytest.raises(ValueError, match="PROX_GPU_NODE_SELECTOR='no-equals-sign': expected"):
        RefinerResource.from_env()
    monkeypatch.setenv("PROX_EXECUTOR", "kubernetes")
    monkeypatch.delenv("PROX_GPU_NODE_SELECTOR")
    with pytest.raises(ValueError, match="PROX_EXECUTOR='kubernetes' is not one of"):
        definitions.build_definitions(data_dir=tmp_path)


def test_the_production_instance_and_helm_values_say_what_the_code_reads(monkeypatch):
    import re
    from pathlib import Path

    import yaml
    from dagster._core.instance.config import dagster_instance_config

    root = Path(__file__).resolve().parent.parent
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB",
                 "PROX_LOG_BUCKET"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("DAGSTER_PG_PORT", "5432")
    # validated against Dagster's instance schema (a misspelt key raises)
    config, _ = dagster_instance_config(str(root / "deploy" / "production"))
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 3
    assert config["run_retries"]["enabled"] and "postgres" in config["storage"]

    values = yaml.safe_load((root / "deploy" / "helm" / "values.yaml").read_text())
    [deployment] = values["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["PROX_EXECUTOR"] == "k8s"
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "prox_dagster.definitions"]
    read = set()
    for folder in ("prox_dagster", "resources", "assets"):
        for path in (root / folder).rglob("*.py"):
            read |= set(re.findall(r"PROX_[A-Z_]+", path.read_text()))
    ours = {name for name in env if name.startswith("PROX_")}
    assert ours <= read, f"variables the code never reads: {ours - read}"
    # the others are Dagster's own, read by the installed dagster
    dagster_source = "".join(path.read_text() for path in
                             (Path(dg.__file__).parent / "_core" / "instance").rglob("*.py"))
    assert {name for name in set(env) - ours if name not in dagster_source} == set()
    assert set(env) - ours == {"DAGSTER_EVENT_BATCH_SIZE"}
    coordinator = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert coordinator["maxConcurrentRuns"] == config["concurrency"]["runs"][
        "max_concurrent_runs"]
