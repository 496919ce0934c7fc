"""The refiner (a GPU resource for LM backends) and the program execution policy."""

import os

import dagster as dg
from pydantic import PrivateAttr

from prox_dagster.chunking import DEFAULT_MAX_TOKENS
from prox_dagster.execute import ExecutionPolicy
from prox_dagster.refiners import Refiner, build_refiner
from prox_dagster.tokenization import SAMPLE_TOKENIZER, load_tokenizer, tokenizer_fingerprint

from .settings import settings_resource


class RefinerResource(dg.ConfigurableResource):
    """Which refiner writes the programs, and how it runs.

    ``classifier`` (default: the learned CPU refiner, the model shipped with the package unless
    ``classifier_model`` names another file), ``rules``, ``hf``, ``vllm`` or ``openai``.

    Built lazily once per process and shared by the doc and chunk steps of a run (the refine
    job runs in one process); models load on the first prompt. ``version`` is the lineage
    fingerprint used as the refiner assets' code version; computing it loads no model.

    ``tokenizer`` is the refiner's tokenizer: it counts the chunk budget (``max_chunk_tokens``)
    and prompt lengths. Empty: the model's own (``hf``, ``vllm``; for ``openai`` the served
    model's name as a hub id, so set it to a folder or hub id for a server), ``sample`` for the
    ``rules`` and ``classifier`` refiners. The pretraining tokenizer (``TokenizerResource``)
    only writes token files and counts the tokens kept.
    """

    backend: str = "classifier"
    tokenizer: str = ""
    max_chunk_tokens: int = DEFAULT_MAX_TOKENS
    max_prompt_tokens: int = 0
    classifier_model: str = ""
    doc_model: str = ""
    chunk_model: str = ""
    revision: str = ""
    dialect: str = "prox"
    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 256
    hf_batch_size: int = 8
    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    base_url: str = ""
    api_key: str = ""
    max_concurrency: int = 8
    request_timeout_s: float = 120.0
    max_retries: int = 5
    gpus_per_step: int = 1
    options: dict[str, float] = {}

    _refiner: Refiner | None = PrivateAttr(default=None)
    _chunk_fingerprint: str | None = PrivateAttr(default=None)

    @classmethod
    def from_env(cls, env=None) -> "RefinerResource":
        """Settings from ``PROX_REFINER_*`` / ``PROX_*_MODEL`` variables (unset: defaults)."""
        env = os.environ if env is None else env
        names = {"backend": "PROX_REFINER_BACKEND", "classifier_model": "PROX_CLASSIFIER_MODEL",
                 "doc_model": "PROX_DOC_MODEL",
                 "chunk_model": "PROX_CHUNK_MODEL", "revision": "PROX_MODEL_REVISION",
                 "dtype": "PROX_REFINER_DTYPE", "device": "PROX_REFINER_DEVICE",
                 "batch_size": "PROX_REFINER_BATCH", "base_url": "PROX_REFINER_BASE_URL",
                 "api_key": "PROX_REFINER_API_KEY", "max_model_len": "PROX_MAX_MODEL_LEN",
                 "gpu_memory_utilization": "PROX_GPU_MEMORY_UTILIZATION",
                 "tensor_parallel_size": "PROX_TENSOR_PARALLEL_SIZE",
                 "tokenizer": "PROX_REFINER_TOKENIZER",
                 "max_chunk_tokens": "PROX_MAX_CHUNK_TOKENS",
                 "max_prompt_tokens": "PROX_MAX_PROMPT_TOKENS"}
        types = {name: field.annotation for name, field in cls.model_fields.items()}
        values = {name: types[name](env[var]) for name, var in names.items() if var in env}
        return cls(**values)

    def backend_options(self) -> dict:
        """The options of ``backend``, as the engine's ``build_refiner`` takes them."""
        if self.backend == "rules":
            return dict(self.options)
        if self.backend == "classifier":
            return {"model": self.classifier_model or None, **self.options}
        common = {"doc_model": self.doc_model, "chunk_model": self.chunk_model or None,
                  "revision": self.revision or None, "dialect": self.dialect,
                  "tokenizer": self.tokenizer or None}
        if self.backend == "hf":
            return {**common, "dtype": self.dtype, "device": self.device,
                    "batch_size": self.hf_batch_size}
        if self.backend == "vllm":
            return {**common, "dtype": self.dtype, "max_model_len": self.max_model_len,
                    "gpu_memory_utilization": self.gpu_memory_utilization,
                    "tensor_parallel_size": self.tensor_parallel_size,
                    "enforce_eager": self.enforce_eager}
        if self.backend == "openai":
            return {**common, "base_url": self.base_url, "api_key": self.api_key or None,
                    "max_concurrency": self.max_concurrency,
                    "request_timeout_s": self.request_timeout_s,
                    "max_retries": self.max_retries,
                    "max_prompt_tokens": self.max_prompt_tokens or None}
        return {}

    def get(self) -> Refiner:
        if self._refiner is None:
            self._refiner = build_refiner(self.backend, **self.backend_options())
        return self._refiner

    @property
    def version(self) -> str:
        return self.get().version

    def chunk_tokenizer(self):
        """The tokenizer that counts the chunk budget: the refiner's (see the class doc)."""
        own = self.get().tokenizer
        return own if own is not None else load_tokenizer(self.tokenizer or SAMPLE_TOKENIZER)

    def chunk_tokenizer_fingerprint(self) -> str:
        if self._chunk_fingerprint is None:
            self._chunk_fingerprint = tokenizer_fingerprint(self.chunk_tokenizer())
        return self._chunk_fingerprint

    @property
    def uses_gpu(self) -> bool:
        return self.backend in ("hf", "vllm") and self.device != "cpu"

    def op_tags(self) -> dict:
        """Per-step Kubernetes requests for the refiner steps (``k8s_job_executor``)."""
        if not self.uses_gpu:
            return {}
        gpus = str(self.gpus_per_step * max(self.tensor_parallel_size, 1))
        return {"dagster-k8s/config": {"container_config": {"resources": {
            "limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}}}}}

    def teardown_after_execution(self, context) -> None:
        if self._refiner is not None and hasattr(self._refiner, "close"):
            self._refiner.close()


ProgramPolicy = settings_resource(
    ExecutionPolicy, "ProgramPolicy",
    "Thresholds and modes of program execution (fields and validation: "
    "``prox_dagster.execute.ExecutionPolicy``).")
