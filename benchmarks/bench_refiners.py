"""LM refiners on CPU: the same chunk prompts through ``hf`` (batched, left-padded) and ``vllm``.

Two randomly initialised Llamas built locally: the tiny test shape and the 0.35B shape of the
ProX refining models (24 layers, hidden 1280, 16 heads, 1 KV head, intermediate 2048, vocab
32000). Random weights never emit EOS, so every prompt decodes exactly ``max_new_tokens``
tokens on both backends: the work is identical. Reported: prompt tokens/s and programs/s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from prox_dagster.chunking import chunk_documents
from prox_dagster.prompts import chunk_prompt
from prox_dagster.refiners.hf import HFRefiner
from prox_dagster.refiners.training import PROX_REFINER_SHAPE, TINY_SHAPE, build_llama
from prox_dagster.refiners.vllm_engine import VLLMRefiner
from prox_dagster.environment import cache_dir
from prox_dagster.tokenization import load_tokenizer

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
CASES = {  # shape, prompts, chunk budget, new tokens per program
    "tiny": (TINY_SHAPE, 64, 512, 64),
    "prox-0.35b": (PROX_REFINER_SHAPE, 16, 256, 16),
}


def _prompts(tokenizer, n: int, budget: int) -> list[str]:
    web = SHARED / "data" / "web" / "dragnet" / "docs.jsonl"
    if web.is_file():
        texts = [json.loads(line)["text"] for line in web.open()][:200]
    else:
        from prox_dagster.sample import sample_texts

        texts = sample_texts(200, seed=5)
    chunks = [c.text for doc in chunk_documents(texts, tokenizer, budget) for c in doc]
    return [chunk_prompt(c) for c in chunks[:n]]


def _model(name: str, shape: dict, tokenizer) -> Path:
    folder = cache_dir() / "models" / f"bench-{name}-v1"
    if not (folder / "config.json").is_file():
        build_llama(folder, tokenizer, **shape)
    return folder


def measure(name: str, backend: str) -> dict:
    """One backend on one case, in this process (``run`` gives each its own process: a vLLM
    engine keeps its memory reservation after shutdown)."""
    llama = SHARED / "tokenizers" / "llama2"
    tokenizer = load_tokenizer(str(llama) if llama.is_dir() else "sample")
    shape, n, budget, new_tokens = CASES[name]
    model = str(_model(name, shape, tokenizer))
    prompts = _prompts(tokenizer, n, budget)
    if backend == "vllm":
        refiner = VLLMRefiner(model, dtype="float32", max_model_len=2048,
                              gpu_memory_utilization=0.3, enforce_eager=True)
    else:
        refiner = HFRefiner(model, batch_size=8)
    refiner._generate(model, prompts[:2], 2)  # load and warm up outside the timing
    start = time.perf_counter()
    refiner._generate(model, prompts, new_tokens)
    seconds = time.perf_counter() - start
    prompt_tokens = sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    return {"prompts": len(prompts), "prompt_tokens": prompt_tokens,
            "new_tokens_per_program": new_tokens, "seconds": round(seconds, 2),
            "prompt_tokens_per_s": round(prompt_tokens / seconds),
            "programs_per_s": round(len(prompts) / seconds, 3)}


def run() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    results = {"benchmark": "refiners_cpu", "cases": {}}
    for name in CASES:
        case = {}
        for backend in ("hf", "vllm"):
            proc = subprocess.run([sys.executable, __file__, name, backend], env=env,
                                  capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"{name}/{backend} failed: {proc.stderr[-2000:]}")
            case[backend] = json.loads(proc.stdout.strip().splitlines()[-1])
        case["vllm_over_hf"] = round(case["hf"]["seconds"] / case["vllm"]["seconds"], 2)
        results["cases"][name] = case
    results["speedup"] = min(c["vllm_over_hf"] for c in results["cases"].values())
    return results


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(json.dumps(measure(sys.argv[1], sys.argv[2])))
    else:
        print(json.dumps(run(), indent=2))
