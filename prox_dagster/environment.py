"""The environment variables that configure a deployment, declared once, and the one place the
process environment is read: local and production runs differ by these settings only.

A variable whose value becomes a resource field names that field (``fields``): Dagster reads it
at run time through ``dg.EnvVar``, and the field's default is its default. The others are read
here, with their default here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Variable:
    name: str
    meaning: str
    default: str = ""  # the value when unset ("": none), for variables read here
    fields: tuple[str, ...] = ()  # the ``Resource.field`` paths it sets, through nested settings
    shown: str = ""  # the default in words, where it is computed


VARIABLES = {v.name: v for v in (
    Variable("PROX_DATA_DIR", "every asset's files: a folder or an s3:// URL", ".prox_data"),
    Variable("PROX_RAW_DIR", "the raw shards the sensor watches (folder or s3://)",
             shown="`$PROX_DATA_DIR/raw`"),
    Variable("PROX_TOKENIZER", "the pretraining tokenizer: a tokenizer folder or hub id", "sample"),
    Variable("PROX_TOKEN_FORMAT", "token files: parquet, megatron or litgpt", "parquet"),
    Variable("PROX_REFINER_BACKEND", "the refiner: classifier, rules, hf, vllm or openai",
             fields=("RefinerResource.backend",)),
    Variable("PROX_REFINER_TOKENIZER", "the refiner's tokenizer (it counts chunk budgets)",
             fields=("RefinerResource.tokenizer",), shown="the model's; `sample` without one"),
    Variable("PROX_MAX_CHUNK_TOKENS", "the chunk budget in refiner tokens",
             fields=("RefinerResource.max_chunk_tokens",)),
    Variable("PROX_REFINER_BATCH", "prompts per refiner call",
             fields=("RefinerResource.batch_size",)),
    Variable("PROX_CLASSIFIER_MODEL", "the classifier's model file (JSON)",
             fields=("RefinerResource.classifier.model",), shown="the shipped model"),
    Variable("PROX_KEEP_KINDS", "line kinds the classifier keeps",
             fields=("RefinerResource.classifier.keep_kinds",), shown="`main,list`"),
    Variable("PROX_CLASSIFIER_PRESET", "precision, balanced or recall",
             fields=("RefinerResource.classifier.preset",), shown="the model's (`balanced`)"),
    Variable("PROX_DOC_MODEL", "the doc refiner's model (hub id or folder)",
             fields=("RefinerResource.doc_model",)),
    Variable("PROX_CHUNK_MODEL", "the chunk refiner's model",
             fields=("RefinerResource.chunk_model",),
             shown="the doc model"),
    Variable("PROX_MODEL_REVISION", "the hub revision of the models",
             fields=("RefinerResource.revision",), shown="`main`"),
    Variable("PROX_REFINER_DTYPE", "hf and vllm: model dtype",
             fields=("RefinerResource.hf.dtype", "RefinerResource.vllm.dtype")),
    Variable("PROX_REFINER_DEVICE", "hf: device", fields=("RefinerResource.hf.device",)),
    Variable("PROX_MAX_MODEL_LEN", "vllm: context length",
             fields=("RefinerResource.vllm.max_model_len",)),
    Variable("PROX_GPU_MEMORY_UTILIZATION", "vllm: share of GPU memory it may take",
             fields=("RefinerResource.vllm.gpu_memory_utilization",)),
    Variable("PROX_TENSOR_PARALLEL_SIZE", "vllm: GPUs per model",
             fields=("RefinerResource.vllm.tensor_parallel_size",)),
    Variable("PROX_REFINER_BASE_URL", "openai: the OpenAI-compatible server",
             fields=("RefinerResource.openai.base_url",)),
    Variable("PROX_REFINER_API_KEY", "openai: its API key (shown as the variable, never the value)",
             fields=("RefinerResource.openai.api_key",)),
    Variable("PROX_REFINER_TIMEOUT_S", "openai: seconds one request may take",
             fields=("RefinerResource.openai.request_timeout_s",)),
    Variable("PROX_MAX_PROMPT_TOKENS", "openai: most prompt tokens the server takes (0: unchecked)",
             fields=("RefinerResource.openai.max_prompt_tokens",)),
    Variable("PROX_GPU_NODE_SELECTOR", "k8s: `key=value,...` the GPU steps' nodes match",
             fields=("RefinerResource.gpu_node_selector",)),
    Variable("PROX_GPU_TOLERATIONS", "k8s: the GPU steps' tolerations (a JSON list)",
             fields=("RefinerResource.gpu_tolerations",), shown="the `nvidia.com/gpu` taint"),
    Variable("PROX_EVAL_SETS", "labelled sets to evaluate on (`:`-separated)",
             shown="the sample crawl's"),
    Variable("PROX_TRAIN_SETS", "labelled sets to train the classifier on",
             shown="the sample crawl's"),
    Variable("PROX_ABLATION_SETS", "held-out clean text the ablation scores on",
             shown="the sample's held-out prose"),
    Variable("PROX_MODEL_DIR", "where `classifier_model` writes models",
             shown="`$PROX_DATA_DIR/models`"),
    Variable("PROX_SHARDS_PER_RUN", "shards per run in backfills (one model load each)", "16"),
    Variable("PROX_REFINE_CRON", "when the schedule refines new and stale shards", "0 * * * *"),
    # about 5 s of a tick on a local disk, 2 cores
    Variable("PROX_TICK_READ_BUDGET", "sidecars one schedule tick may read", "30000"),
    Variable("PROX_EXECUTOR", "how steps run: in_process, multiprocess or k8s", "in_process"),
    Variable("PROX_CACHE_DIR", "weight digests, remembered hub commits, built tokenizers",
             shown="`~/.cache/prox-dagster`"),
)}

# Read here too, never declared above: Dagster's own home and the thread count libraries take
OTHER = ("DAGSTER_HOME", "OMP_NUM_THREADS")


def _default(name: str) -> str:
    if name in OTHER:
        return ""
    if name not in VARIABLES:
        raise KeyError(f"{name} is not declared in prox_dagster.environment.VARIABLES")
    return VARIABLES[name].default


def value(name: str) -> str:
    """The variable's value, or its default when it is unset or empty."""
    return os.environ.get(name) or _default(name)


def integer(name: str, default: int | None = None) -> int:
    """The variable as a whole number; ``default`` where it has none of its own (a resource
    field's default, which is defined with the field)."""
    text = value(name)
    if not text and default is not None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a whole number") from None


def paths(name: str) -> list[str]:
    """Local paths separated by ``:`` or ``,``."""
    return [p for p in value(name).replace(",", os.pathsep).split(os.pathsep) if p.strip()]


def is_set(name: str) -> bool:
    """Whether the variable has a value (an empty one counts as unset)."""
    _default(name)  # an undeclared name is an error here too
    return bool(os.environ.get(name))


def cache_dir() -> Path:
    return Path(value("PROX_CACHE_DIR") or Path.home() / ".cache" / "prox-dagster")


def set_default(name: str, text: str) -> None:
    """Sets a variable for this process and its children unless the user set it."""
    os.environ.setdefault(name, text)


def assign(name: str, text: str) -> None:
    """Sets a variable for this process and its children (the CLI's flags, ``DAGSTER_HOME``)."""
    os.environ[name] = text
