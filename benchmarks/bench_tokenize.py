"""Tokenizing clean shards into training files, against the raw ceiling and ProX's way.

On the same documents, in one process:

* ceiling: the Rust tokenizer's batch call alone (``encode_batch_fast``, or ``encode_batch``),
  nothing read, nothing written;
* ours: ``write_token_files`` end to end: read the clean shard's Parquet in batches, tokenize,
  convert, write Megatron ``.bin``/``.idx`` (and the other formats, reported);
* baseline: one ``tokenizer.encode`` per document and a per-document array conversion, the way
  ProX's ``prepare_web.py`` feeds its packed-dataset builder.

Then memory: a clean shard of about 1 GB tokenized in a child process, its peak RSS reported.
Real web documents and the Llama-2 tokenizer from ../shared when present, else the sample crawl.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from prox_dagster.token_files import FORMATS, token_dtype, write_token_files
from prox_dagster.tokenization import load_tokenizer, rust_tokenizer

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def load_inputs() -> tuple[list[str], str, str]:
    web = SHARED / "data" / "web"
    llama = SHARED / "tokenizers" / "llama2"
    if web.is_dir() and llama.is_dir():
        texts = [json.loads(line)["text"] for path in sorted(web.glob("*/docs.jsonl"))
                 for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
        return texts, str(llama), "../shared/data/web + llama2"
    from prox_dagster.sample import sample_texts

    return sample_texts(2000, seed=1), "sample", "sample crawl + sample BPE"


def write_clean_shard(texts: list[str], path: Path, target_bytes: int = 0) -> int:
    """A clean shard of ``texts`` (repeated up to ``target_bytes`` of text when given)."""
    repeat = max(1, -(-target_bytes // sum(len(t.encode()) for t in texts))) if target_bytes \
        else 1
    frame = pl.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts,
                          "status": ["kept"] * len(texts)})
    frame = pl.concat([frame.with_columns(pl.col("id") + f"-{r}") for r in range(repeat)])
    frame.write_parquet(path, row_group_size=2000)
    return len(frame)


def ceiling(tokenizer, texts: list[str], batch_size: int) -> None:
    backend = rust_tokenizer(tokenizer)
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    for i in range(0, len(texts), batch_size):
        encode(texts[i:i + batch_size], add_special_tokens=False)


def baseline(tokenizer, texts: list[str]) -> list[np.ndarray]:
    """ProX's ``prepare_web.py``: ``encode`` per document, EOS appended, a leading BOS dropped,
    then ``torch.tensor`` and ``np.array`` per document."""
    import torch

    dtype = token_dtype(len(tokenizer))
    out = []
    for text in texts:
        if not text:
            continue
        ids = tokenizer.encode(text) + [tokenizer.eos_token_id]
        if ids[0] == tokenizer.bos_token_id:
            ids = ids[1:]
        out.append(np.array(torch.tensor(ids, dtype=torch.int), dtype=dtype))
    return out


def best_times(fns: dict, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` wall times of each function, the functions interleaved so that a
    slow spell of this shared machine hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def peak_rss_child(clean: Path, out: Path, tokenizer_name: str) -> dict:
    code = (
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forked parent across exec
        "import json, re, sys, time\n"
        "from prox_dagster.token_files import write_token_files\n"
        "from prox_dagster.tokenization import load_tokenizer\n"
        "def mib(key):\n"
        "    status = open('/proc/self/status').read()\n"
        "    return int(re.search(key + r':\\s+(\\d+)', status).group(1)) / 1024\n"
        "tok = load_tokenizer(sys.argv[3])\n"
        "before = mib('VmHWM')\n"
        "start = time.perf_counter()\n"
        "s = write_token_files(sys.argv[1], sys.argv[2], 'big', tok, 'megatron')\n"
        "print(json.dumps({'seconds': time.perf_counter() - start, 'documents': s.documents,\n"
        "  'tokens': s.tokens, 'rss_after_loading_mib': before,\n"
        "  'peak_rss_mib': mib('VmHWM')}))\n")
    done = subprocess.run([sys.executable, "-c", code, str(clean), str(out), tokenizer_name],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(repeats: int = 3, batch_size: int = 1024, big_bytes: int = 1 << 30) -> dict:
    texts, tokenizer_name, source = load_inputs()
    tokenizer = load_tokenizer(tokenizer_name)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clean = tmp / "clean.parquet"
        # enough text for stable timings: the real documents, repeated to about 64 MB
        n_docs = write_clean_shard(texts, clean, 64 << 20)
        all_texts = pl.read_parquet(clean, columns=["text"])["text"].to_list()
        text_mb = sum(len(t.encode()) for t in all_texts) / 1e6
        fns = {"ceiling": lambda: ceiling(tokenizer, all_texts, batch_size),
               **{fmt: lambda fmt=fmt: write_token_files(
                   clean, tmp / fmt, "bench", tokenizer, fmt, batch_size=batch_size)
                  for fmt in FORMATS}}
        best = best_times(fns, repeats)
        ceiling_s, ours_s = best.pop("ceiling"), best
        base_s = best_times({"baseline": lambda: baseline(tokenizer, all_texts)}, 1)["baseline"]
        tokens = write_token_files(clean, tmp / "check", "bench", tokenizer, "megatron").tokens

        big = tmp / "big.parquet"
        big_docs = write_clean_shard(texts, big, big_bytes)
        memory = {"clean_shard_mib": round(big.stat().st_size / 2 ** 20),
                  "documents": big_docs, **peak_rss_child(big, tmp / "big", tokenizer_name)}
        memory["text_mib"] = round(big_bytes / 2 ** 20)
    ours = ours_s["megatron"]
    return {
        "benchmark": "tokenize", "inputs": source, "documents": n_docs,
        "text_mb": round(text_mb, 1), "tokens": tokens,
        "ceiling_mb_per_s": round(text_mb / ceiling_s, 2),
        "ours_mb_per_s": {fmt: round(text_mb / s, 2) for fmt, s in ours_s.items()},
        "baseline_mb_per_s": round(text_mb / base_s, 2),
        "ours_over_ceiling": round(ceiling_s / ours, 3),
        "ours_over_baseline": round(base_s / ours, 2),
        "memory_1gb_shard": {k: round(v, 1) if isinstance(v, float) else v
                             for k, v in memory.items()},
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
