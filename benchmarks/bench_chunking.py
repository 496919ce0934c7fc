"""Chunking: our batched chunker against the ProX reference (one tokenizer.encode per line).

Both run on the same documents with the same tokenizer in one process; the chunks must be
identical. Real web documents and the Llama-2 tokenizer from ../shared when present, else the
sample crawl and the offline sample tokenizer.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from baselines import reference_chunks

from prox_dagster.chunking import chunk_documents
from prox_dagster.tokenization import load_tokenizer

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


def load_inputs() -> tuple[list[str], object, str]:
    web = SHARED / "data" / "web"
    if web.is_dir() and (SHARED / "tokenizers" / "llama2").is_dir():
        texts = [json.loads(line)["text"] for path in sorted(web.glob("*/docs.jsonl"))
                 for line in path.open()]
        return texts, load_tokenizer(str(SHARED / "tokenizers" / "llama2")), \
            "../shared/data/web + llama2"
    from prox_dagster.sample import sample_texts

    return sample_texts(2000, seed=1), load_tokenizer("sample"), "sample crawl + sample BPE"


def run(max_tokens: int = 1500, repeats: int = 3) -> dict:
    texts, tokenizer, source = load_inputs()
    lines = sum(t.count("\n") + 1 for t in texts)

    def best(fn):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return min(times), out

    base_s, base = best(lambda: [reference_chunks(t, tokenizer, max_tokens) for t in texts])
    ours_s, ours = best(lambda: chunk_documents(texts, tokenizer, max_tokens))
    identical = base == [[c.text for c in doc] for doc in ours]
    return {
        "benchmark": "chunking", "inputs": source, "documents": len(texts), "lines": lines,
        "max_tokens": max_tokens,
        "baseline_lines_per_s": round(lines / base_s), "ours_lines_per_s": round(lines / ours_s),
        "speedup": round(base_s / ours_s, 2), "identical_chunks": identical,
    }
