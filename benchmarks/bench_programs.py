"""Parse + execute: our parser and executor against the reference string-split executor.

The same 50,000 (document, chunk program) pairs go through both, in one process: programs the
rules refiner writes for real documents, the shapes LM refiners also emit (positional arguments,
single quotes, strings holding commas, quotes or parentheses, several calls per line, code
fences) and garbled ones (mutated, truncated). Ours runs in reference mode, so any disagreement
comes from how the program is read, and each is classified by what the baseline misread.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

from baselines import reference_execute

from prox_dagster.chunking import chunk_lines
from prox_dagster.execute import ExecutionPolicy, execute_document
from prox_dagster.programs import parse_program
from prox_dagster.refiners import build_refiner
from prox_dagster.tokenization import load_tokenizer

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
N_PROGRAMS = 50_000


def _documents() -> tuple[list[str], str]:
    web = SHARED / "data" / "web"
    if web.is_dir():
        texts = [json.loads(line)["text"] for path in sorted(web.glob("*/docs.jsonl"))
                 for line in path.open()]
        return [t for t in texts if len(t.split()) > 20], "../shared/data/web"
    from prox_dagster.sample import sample_texts

    return sample_texts(600, seed=3), "sample crawl"


def _fragment(text: str, mark: str) -> str | None:
    """A few words of ``text`` around its first ``mark`` (a string the baseline cannot read)."""
    at = text.find(mark)
    if at < 0:
        return None
    start = text.rfind(" ", 0, max(at - 12, 0)) + 1
    end = text.find(" ", at + 12)
    fragment = text[start:end if end > 0 else len(text)]
    return fragment if "\n" not in fragment and "\\" not in fragment else None


def _lm_variant(rng: random.Random, text: str, program: str) -> tuple[str, str]:
    """Rewrite a canonical program the ways LM refiners write the same calls."""
    kind = rng.choice(["positional", "single_quotes", "comma_string", "quote_string",
                       "paren_string", "one_line", "fence"])
    if kind == "positional":
        program = program.replace("line_start=", "").replace("line_end=", "")
    elif kind == "single_quotes":
        program = program.replace('"', "'")
    elif kind in ("comma_string", "quote_string", "paren_string"):
        mark = {"comma_string": ",", "quote_string": '"', "paren_string": "("}[kind]
        fragment = _fragment(text, mark) or f"Read more{mark} later"
        literal = '"' + fragment.replace('"', '\\"') + '"'
        program = f"normalize(source_str={literal}, target_str=\"\")\n{program}"
    elif kind == "one_line":
        program = "; ".join(program.split("\n"))
    else:
        program = f"```python\n{program}\n```"
    return program, kind


def _garble(rng: random.Random, program: str) -> tuple[str, str]:
    kind = rng.choice(["truncated", "mutated"])
    if kind == "truncated":
        return program[: rng.randrange(1, len(program) + 1)], kind
    chars = list(program)
    for _ in range(rng.randrange(1, 4)):
        chars.insert(rng.randrange(len(chars) + 1), rng.choice("(),='\"x1 \n"))
    return "".join(chars), kind


def _workload(rng: random.Random):
    texts, source = _documents()
    tokenizer = load_tokenizer("sample")
    refiner = build_refiner("rules")
    pairs = []
    for text in texts:
        # one chunk program per document, covering the document (the reference's view)
        chunks = chunk_lines(text, tokenizer, max_tokens=10**9)
        program = refiner.generate([f"[doc]\n{chunks[0].text}\n[/doc]"], level="chunk")[0]
        pairs.append((text, program))
    workload = []
    while len(workload) < N_PROGRAMS:
        text, program = pairs[len(workload) % len(pairs)]
        roll = rng.random()
        if roll < 0.6:
            workload.append((text, program, "canonical"))
        elif roll < 0.85:
            workload.append((text, *_lm_variant(rng, text, program)))
        else:
            workload.append((text, *_garble(rng, program)))
    return workload, source


def run(repeats: int = 3) -> dict:
    rng = random.Random(7)
    workload, source = _workload(rng)
    policy = ExecutionPolicy.reference()

    def ours_one(text: str, program: str) -> str:
        n = text.count("\n") + 1
        return execute_document(text, "keep_doc()", [(0, n - 1, program)], policy).text

    def timed(fn):
        best, out = float("inf"), None
        for _ in range(repeats):
            start = time.perf_counter()
            out = [fn(text, program) for text, program, _ in workload]
            best = min(best, time.perf_counter() - start)
        return best, out

    base_s, base = timed(reference_execute)
    ours_s, ours = timed(ours_one)
    agree = Counter()
    differ = Counter()
    for (text, program, kind), b, o in zip(workload, base, ours):
        (agree if b == o else differ)[kind] += 1
    # canonical programs are where the reference is well defined: there we must agree exactly
    canonical_ok = differ["canonical"] == 0
    # where they differ on the LM shapes, the baseline misread the program; ours parses it
    lm_kinds = {"positional", "single_quotes", "comma_string", "quote_string", "paren_string",
                "one_line", "fence"}
    ours_parsed = sum(parse_program(p, "chunk").ok for _, p, k in workload if k in lm_kinds)
    return {
        "benchmark": "parse_execute", "inputs": source, "programs": len(workload),
        "mix": dict(Counter(k for _, _, k in workload)),
        "baseline_programs_per_s": round(len(workload) / base_s),
        "ours_programs_per_s": round(len(workload) / ours_s),
        "speedup": round(base_s / ours_s, 2),
        "agree_by_kind": dict(agree), "differ_by_kind": dict(differ),
        "canonical_identical": canonical_ok,
        "lm_shapes_parsed_by_ours": ours_parsed,
        "lm_shapes_total": sum(1 for _, _, k in workload if k in lm_kinds),
    }


if __name__ == "__main__":
    print(json.dumps(run(repeats=1), indent=2))
