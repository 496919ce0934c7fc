"""Parse + execute: our parser and executor against the reference string-split executor.

Two workloads of 50,000 (text, chunk program) pairs each go through both, in one process:

- ``chunks``: what the pipeline executes, a program per chunk of at most 1,500 tokens, written
  by the rules refiner on that chunk;
- ``documents``: a program per whole page (the reference's own view).

Each mixes the programs as written (60%), the shapes LM refiners also emit (25%: positional
arguments, single quotes, strings holding commas, quotes or parentheses, several calls per
line, code fences) and garbled ones (15%: mutated, truncated). Ours runs in reference mode, so
any disagreement comes from how the program is read, and each is classified by what the
baseline misread. Ours is also timed as its two halves, parsing alone and executing programs
already parsed, each with a profile of where its time goes.
"""

from __future__ import annotations

import cProfile
import gc
import json
import pstats
import random
import time
from collections import Counter
from pathlib import Path

from baselines import reference_execute

from prox_dagster.chunking import chunk_lines, number_line
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

LM_KINDS = ("positional", "single_quotes", "comma_string", "quote_string", "paren_string",
            "one_line", "fence")


def _pairs(texts: list[str], unit: str) -> list[tuple[str, str]]:
    """(text, program) per page (``documents``) or per chunk of at most 1,500 tokens
    (``chunks``), the program written by the rules refiner on that text's numbered lines."""
    tokenizer = load_tokenizer("sample")
    refiner = build_refiner("rules")
    pairs = []
    for text in texts:
        lines = text.split("\n")
        budget = 10**9 if unit == "documents" else 1500
        for chunk in chunk_lines(text, tokenizer, max_tokens=budget):
            part = "\n".join(lines[chunk.line_start:chunk.line_end + 1])
            if not part.split():
                continue  # a chunk of blank lines: the reference divides by its zero words
            numbered = "\n".join(number_line(i, line) for i, line in enumerate(part.split("\n")))
            program = refiner.generate([f"[doc]\n{numbered}\n[/doc]"], level="chunk")[0]
            pairs.append((part, program))
    return pairs


def _workload(rng: random.Random, pairs: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
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
    return workload


def _profile(fn, top: int = 6) -> list[dict]:
    """Where ``fn``'s time goes: the functions with the most time of their own, and their
    share of the whole."""
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    stats = pstats.Stats(profiler).stats
    total = sum(entry[2] for entry in stats.values()) or 1.0
    ranked = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return [{"function": f"{Path(file).name}:{line}({name})" if file != "~" else name,
             "calls": entry[1], "share": round(entry[2] / total, 3)}
            for (file, line, name), entry in ranked]


def measure(workload: list[tuple[str, str, str]], repeats: int) -> dict:
    policy = ExecutionPolicy.reference()
    spans = [(0, text.count("\n"), program) for text, program, _ in workload]

    def ours_one(text: str, span: tuple[int, int, str]) -> str:
        return execute_document(text, "keep_doc()", [span], policy).text

    def timed(fn, args) -> tuple[float, list]:
        # the collector off for both sides: 50,000 parsed programs kept alive would otherwise
        # make it scan more at every run and charge that to parsing
        best, out = float("inf"), None
        gc.collect()
        gc.disable()
        try:
            for _ in range(repeats):
                out = None
                start = time.perf_counter()
                out = [fn(*a) for a in args]
                best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
        return best, out

    base_s, base = timed(reference_execute, [(text, program) for text, program, _ in workload])
    ours_s, ours = timed(ours_one, [(text, span) for (text, _, _), span in zip(workload, spans)])
    parse_s, parsed = timed(parse_program, [(program, "chunk") for _, program, _ in workload])
    ready = [(text, (start, end, tree)) for (text, _, _), (start, end, _), tree
             in zip(workload, spans, parsed)]
    execute_s, executed = timed(ours_one, ready)
    assert executed == ours  # parsing first changes nothing
    agree, differ = Counter(), Counter()
    for (_, _, kind), b, o in zip(workload, base, ours):
        (agree if b == o else differ)[kind] += 1
    by_kind = {}
    for kind in sorted({k for _, _, k in workload}):
        chosen = [i for i, (_, _, k) in enumerate(workload) if k == kind]
        b_s, _ = timed(reference_execute, [workload[i][:2] for i in chosen])
        o_s, _ = timed(ours_one, [(workload[i][0], spans[i]) for i in chosen])
        by_kind[kind] = round(b_s / o_s, 2)
    n = len(workload)
    return {
        "programs": n, "mean_lines": round(sum(t.count("\n") + 1 for t, _, _ in workload) / n, 1),
        "mix": dict(Counter(k for _, _, k in workload)),
        "baseline_programs_per_s": round(n / base_s),
        "ours_programs_per_s": round(n / ours_s),
        "speedup": round(base_s / ours_s, 2),
        "speedup_by_kind": by_kind,
        # ours in two halves: parsing alone, and executing the programs already parsed
        "parse_us_per_program": round(parse_s / n * 1e6, 1),
        "execute_us_per_program": round(execute_s / n * 1e6, 1),
        "profile_parse": _profile(lambda: [parse_program(p, "chunk") for _, p, _ in workload]),
        "profile_execute": _profile(lambda: [ours_one(*a) for a in ready]),
        "agree_by_kind": dict(agree), "differ_by_kind": dict(differ),
        # canonical programs are where the reference is well defined: there we must agree
        "canonical_identical": differ["canonical"] == 0,
        # where they differ on the LM shapes, the baseline misread the program; ours parses it
        "lm_shapes_parsed_by_ours": sum(tree.ok for tree, (_, _, k) in zip(parsed, workload)
                                        if k in LM_KINDS),
        "lm_shapes_total": sum(1 for _, _, k in workload if k in LM_KINDS),
    }


def run(repeats: int = 3) -> dict:
    texts, source = _documents()
    workloads = {unit: measure(_workload(random.Random(7), _pairs(texts, unit)), repeats)
                 for unit in ("chunks", "documents")}
    result = {"benchmark": "parse_execute", "inputs": source, "workloads": workloads,
              "speedup": min(w["speedup"] for w in workloads.values()),
              "canonical_identical": all(w["canonical_identical"] for w in workloads.values())}
    return result


def render(result: dict) -> str:
    rows = ["| workload | programs (mean lines) | reference executor | ours | ratio | ours: parse / "
            "execute per program |", "|---|---|---|---|---|---|"]
    for unit, w in result["workloads"].items():
        rows.append(f"| {unit} | {w['programs']:,} ({w['mean_lines']}) | "
                    f"{w['baseline_programs_per_s'] / 1000:.1f}k/s | "
                    f"{w['ours_programs_per_s'] / 1000:.1f}k/s | **{w['speedup']:.2f}×** | "
                    f"{w['parse_us_per_program']} µs / {w['execute_us_per_program']} µs |")
    chunks = result["workloads"]["chunks"]
    kinds = ", ".join(f"{kind} {ratio:.2f}×" for kind, ratio in chunks["speedup_by_kind"].items())
    top = lambda name: ", ".join(f"`{p['function']}` {p['share']:.0%}"  # noqa: E731
                                 for p in chunks[name][:3])
    return "\n".join([
        *rows, "",
        f"By kind, on chunks: {kinds}.",
        f"Where parsing's time goes (chunks): {top('profile_parse')}. "
        f"Executing's: {top('profile_execute')}.",
        f"Canonical programs give identical text in both workloads: "
        f"{'yes' if result['canonical_identical'] else 'NO'}; ours parses "
        f"{chunks['lm_shapes_parsed_by_ours']:,} of the {chunks['lm_shapes_total']:,} LM shapes "
        "(chunks)."])


if __name__ == "__main__":
    print(json.dumps(run(repeats=1), indent=2))
