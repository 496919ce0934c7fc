"""The refiner (a GPU resource for LM backends) and the program execution policy."""

import json

import dagster as dg
from pydantic import PrivateAttr

from prox_dagster import environment
from prox_dagster.chunking import DEFAULT_MAX_TOKENS
from prox_dagster.execute import ExecutionPolicy
from prox_dagster.refiners import LM_BACKENDS, Refiner, build_refiner
from prox_dagster.tokenization import SAMPLE_TOKENIZER, load_tokenizer, tokenizer_identity



def _from_env(cls, path: str, nested: dict):
    """``cls`` (with the ``nested`` values given), each field that a set variable names
    (``prox_dagster.environment``, by its ``path``) taken from it: a ``dg.EnvVar`` (the UI shows
    the variable, not a secret's value), ``EnvVar.int`` for ints; floats, mappings and lists are
    read here (Dagster's EnvVar has no such forms)."""
    values: dict = {}
    for var in environment.VARIABLES.values():
        for owner, _, name in (f.rpartition(".") for f in var.fields):
            if owner != path or not environment.is_set(var.name):
                continue
            kind = cls.model_fields[name].annotation
            text = environment.value(var.name)
            if kind is float:
                values[name] = _number(text, var.name)
            elif kind is int:
                values[name] = dg.EnvVar.int(var.name)
            elif kind == dict[str, str]:
                values[name] = _key_values(text, var.name)
            elif kind == list[dict[str, str]]:
                values[name] = json.loads(text)
            else:
                values[name] = dg.EnvVar(var.name)
    return cls(**values, **nested)


def field_default(path: str):
    """The default of the resource field a variable names (``RefinerResource.hf.dtype``)."""
    owner, first, *rest = path.split(".")
    value = {"RefinerResource": RefinerResource}[owner].model_fields[first].default
    for name in rest:
        value = getattr(value, name)
    return value


def _number(text: str, variable: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{variable}={text!r} is not a number") from None


def _key_values(text: str, variable: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[0].strip() for pair in pairs):
        raise ValueError(f"{variable}={text!r}: expected key=value pairs separated by commas")
    return {key.strip(): value.strip() for key, value in pairs}


class ClassifierSettings(dg.Config):
    """`classifier`: the learned CPU refiner. `model`: a model file written by
    `train-refiner` (empty: the one shipped with the package); `keep_kinds`: the line kinds
    that survive, comma-separated (empty: `main,list`; add `comment` for dialogue); `preset`:
    `precision`, `balanced` or `recall` (empty: the model's own); `options`: its rule options
    (see `RulesConfig`)."""

    model: str = ""
    keep_kinds: str = ""
    preset: str = ""
    options: dict[str, float] = {}

    def refiner_options(self) -> dict:
        chosen = {"keep_kinds": self.keep_kinds, "preset": self.preset}
        return {"model": self.model or None, **{k: v for k, v in chosen.items() if v},
                **self.options}


class RulesSettings(dg.Config):
    """`rules`: the rules refiner's options (`RulesConfig` fields)."""

    options: dict[str, float] = {}

    def refiner_options(self) -> dict:
        return dict(self.options)


class HFSettings(dg.Config):
    """`hf`: transformers; `batch_size` prompts per `generate` call."""

    dtype: str = "auto"
    device: str = "auto"
    batch_size: int = 8

    def refiner_options(self) -> dict:
        return {"dtype": self.dtype, "device": self.device, "batch_size": self.batch_size}


class VLLMSettings(dg.Config):
    """`vllm`: the offline engine's arguments."""

    dtype: str = "auto"
    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    enforce_eager: bool = False

    def refiner_options(self) -> dict:
        return {"dtype": self.dtype, "max_model_len": self.max_model_len,
                "gpu_memory_utilization": self.gpu_memory_utilization,
                "tensor_parallel_size": self.tensor_parallel_size,
                "enforce_eager": self.enforce_eager}


class OpenAISettings(dg.Config):
    """`openai`: an OpenAI-compatible completions server. `max_prompt_tokens`: the most
    the server takes (its `--max-model-len` less one; 0: not checked here)."""

    base_url: str = ""
    api_key: str = ""
    max_concurrency: int = 8
    request_timeout_s: float = 120.0
    max_retries: int = 5
    max_prompt_tokens: int = 0

    def refiner_options(self) -> dict:
        return {"base_url": self.base_url, "api_key": self.api_key or None,
                "max_concurrency": self.max_concurrency,
                "request_timeout_s": self.request_timeout_s, "max_retries": self.max_retries,
                "max_prompt_tokens": self.max_prompt_tokens or None}


class RefinerResource(dg.ConfigurableResource):
    """Which refiner writes the programs, and how it runs.

    ``backend``: ``classifier`` (default: the learned CPU refiner), ``rules``, ``hf``,
    ``vllm`` or ``openai``; each backend's own settings are in its field of the same name
    (``classifier``, ``rules``, ``hf``, ``vllm``, ``openai``). The models (``doc_model``,
    ``chunk_model``, ``revision``, ``dialect``) are shared by the three LM backends.

    Built lazily once per process and shared by the doc and chunk steps of a run (the refine
    job runs in one process); models load on the first prompt. ``version`` is the lineage
    fingerprint used as the refiner assets' code version; computing it loads no model.

    ``tokenizer`` is the refiner's tokenizer: it counts the chunk budget (``max_chunk_tokens``)
    and prompt lengths. Empty: the model's own (``hf``, ``vllm``; for ``openai`` the served
    model's name as a hub id, so set it to a folder or hub id for a server), ``sample`` for the
    ``rules`` and ``classifier`` refiners. The pretraining tokenizer (``TokenizerResource``)
    only writes token files and counts the tokens kept. ``batch_size``: prompts per step batch
    (``PROX_REFINER_BATCH``). Under ``k8s_job_executor`` a GPU refiner step's pod requests
    ``gpus_per_step`` x tensor-parallel GPUs, lands on nodes matching ``gpu_node_selector``
    (``PROX_GPU_NODE_SELECTOR``: ``key=value,key=value``) and tolerates ``gpu_tolerations``
    (``PROX_GPU_TOLERATIONS``: a JSON list; default: the ``nvidia.com/gpu`` taint GPU node
    pools carry).
    """

    backend: str = "classifier"
    tokenizer: str = ""
    max_chunk_tokens: int = DEFAULT_MAX_TOKENS
    batch_size: int = 256
    gpus_per_step: int = 1
    gpu_node_selector: dict[str, str] = {}
    gpu_tolerations: list[dict[str, str]] = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    doc_model: str = ""
    chunk_model: str = ""
    revision: str = ""
    dialect: str = "prox"
    classifier: ClassifierSettings = ClassifierSettings()
    rules: RulesSettings = RulesSettings()
    hf: HFSettings = HFSettings()
    vllm: VLLMSettings = VLLMSettings()
    openai: OpenAISettings = OpenAISettings()

    _refiner: Refiner | None = PrivateAttr(default=None)
    _identities: dict = PrivateAttr(default_factory=dict)
    _live: "RefinerResource | None" = PrivateAttr(default=None)

    @classmethod
    def from_env(cls) -> "RefinerResource":
        """Settings from the ``PROX_*`` variables that name its fields (unset: the defaults),
        as ``dg.EnvVar`` values where Dagster has a form for them; :meth:`resolved` reads
        them."""
        own = cls.__name__
        return _from_env(cls, own, {
            name: _from_env(settings, f"{own}.{name}", {})
            for name, settings in (("classifier", ClassifierSettings), ("hf", HFSettings),
                                   ("vllm", VLLMSettings), ("openai", OpenAISettings))})

    def resolved(self) -> "RefinerResource":
        """This resource with its ``EnvVar`` values read, as a run sees it (for code versions
        computed when the definitions load, the audit and the CLI); the same object each time,
        so a command builds its refiner once."""
        if self._live is None:
            with self.process_config_and_initialize_cm() as live:
                self._live = live  # its teardown at exit closes nothing: nothing is built yet
        return self._live

    def backend_options(self) -> dict:
        """The options of ``backend``, as the engine's ``build_refiner`` takes them."""
        settings = getattr(self, self.backend, None) if self.backend in (
            "classifier", "rules", *LM_BACKENDS) else None
        if settings is None:
            return {}  # an unknown backend: build_refiner names the ones there are
        options = settings.refiner_options()
        if self.backend in LM_BACKENDS:
            options.update(doc_model=self.doc_model, chunk_model=self.chunk_model or None,
                           revision=self.revision or None, dialect=self.dialect,
                           tokenizer=self.tokenizer or None)
        return options

    def get(self) -> Refiner:
        """The refiner, built once per resource (its model loads on its first prompt); a hub
        model's revision is resolved here, so an unreachable hub fails the step that needs
        it."""
        if self._refiner is None:
            self._refiner = build_refiner(self.backend, **self.backend_options())
        return self._refiner

    def describe(self, resolve: bool = True) -> str:
        """The refiner's version. ``resolve=False`` (loading the code location) asks no hub:
        a hub model's commit is what this machine remembers, else ``unresolved``."""
        if self._refiner is None and (resolve or self.backend not in LM_BACKENDS):
            self.get()
        if self._refiner is not None:
            return self._refiner.version
        return build_refiner(self.backend, resolve=False, **self.backend_options()).version

    @property
    def version(self) -> str:
        return self.describe()

    def chunk_tokenizer(self):
        """The tokenizer that counts the chunk budget: the refiner's (see the class doc)."""
        own = self.get().tokenizer
        return own if own is not None else load_tokenizer(self.tokenizer or SAMPLE_TOKENIZER)

    def chunk_tokenizer_identity(self, resolve: bool = True) -> str:
        """What identifies :meth:`chunk_tokenizer`, read without loading it."""
        if resolve not in self._identities:
            if self.backend in LM_BACKENDS:
                source = self.tokenizer or self.chunk_model or self.doc_model
                self._identities[resolve] = tokenizer_identity(
                    source, revision=self.revision or None, resolve=resolve)
            else:
                self._identities[resolve] = tokenizer_identity(
                    self.tokenizer or SAMPLE_TOKENIZER, resolve=resolve)
        return self._identities[resolve]

    @property
    def uses_gpu(self) -> bool:
        return self.backend == "vllm" or (self.backend == "hf" and self.hf.device != "cpu")

    def op_tags(self) -> dict:
        """Per-step Kubernetes requests for the refiner steps (``k8s_job_executor``)."""
        if not self.uses_gpu:
            return {}
        parallel = self.vllm.tensor_parallel_size if self.backend == "vllm" else 1
        gpus = str(self.gpus_per_step * max(parallel, 1))
        pod = {"tolerations": list(self.gpu_tolerations)}
        if self.gpu_node_selector:
            pod["node_selector"] = dict(self.gpu_node_selector)
        return {"dagster-k8s/config": {
            "container_config": {"resources": {"limits": {"nvidia.com/gpu": gpus},
                                               "requests": {"nvidia.com/gpu": gpus}}},
            "pod_spec_config": pod}}

    def teardown_after_execution(self, context) -> None:
        if self._refiner is not None and hasattr(self._refiner, "close"):
            self._refiner.close()


class ProgramPolicy(dg.ConfigurableResource, ExecutionPolicy):
    """Thresholds and modes of program execution (fields, defaults and validation:
    ``prox_dagster.execute.ExecutionPolicy``)."""

    def settings(self) -> ExecutionPolicy:
        return ExecutionPolicy(**{name: getattr(self, name)
                                  for name in ExecutionPolicy.model_fields})
