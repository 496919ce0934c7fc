"""Child process of tests/test_hostile.py: the work that must run under its own memory limit and
wall-clock cap. Prints one JSON object per result line (flushed, so a hang shows where).

    python tests/hostile_rules.py rules   every refiner rule on 1 MB adversarial lines
    python tests/hostile_rules.py huge    a 16 MB single-line document through every stage,
                                          token files included
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time

MB = 1_000_000

SHAPES = {
    "spaces_between": lambda n: "a" + " " * n + "a",
    "separators": lambda n: "| " * (n // 2),
    "separators_in_spaces": lambda n: ("a" + " " * 1000 + "b |") * (n // 1004),
    "cookie": lambda n: "cookie. " * (n // 8),
    "copyright_then_spaces": lambda n: "(c)" + " " * n + "x",
    "byline": lambda n: "by " + "a" * n,
    "digits": lambda n: "1" * n + " comments",
    "mojibake": lambda n: "Ã©" * (n // 2),
    "mojibake_run": lambda n: "Ã" + "\u0080" * n,
    "cjk": lambda n: "日本" * (n // 2),
    "url": lambda n: "http://" + "x" * n,
    "www": lambda n: "www." * (n // 4),
    "dates": lambda n: "1/1/" * (n // 4),
    "emails": lambda n: "a@b." * (n // 4),
    "bullets": lambda n: "- " * (n // 2),
    "words": lambda n: "word " * (n // 5),
    "tabs_and_spaces": lambda n: "\t " * (n // 2),
    "dots": lambda n: "a." * (n // 2),
    "ellipsis": lambda n: "…" * n,
    "says": lambda n: "a" * n + " says",
    "posted_by": lambda n: "posted by " + "a " * (n // 2),
    "related": lambda n: "Related posts" + " " * n + ":",
}


def rules() -> None:
    from prox_dagster.chunking import number_line, split_numbered
    from prox_dagster.refiners import signals
    from prox_dagster.refiners.classifier import ClassifierRefiner
    from prox_dagster.refiners.line_features import chunk_features, line_key
    from prox_dagster.refiners.rules import RulesRefiner
    from prox_dagster.words import word_count

    rules_refiner, classifier = RulesRefiner(), ClassifierRefiner()
    every_rule = {
        "line_reason": signals.line_reason,
        "line_reasons": lambda line: signals.line_reasons([line, line]),
        "document_reason": signals.document_reason,
        "mojibake_fixes": signals.mojibake_fixes,
        "is_prose": signals.is_prose,
        "strip_bullet": signals.strip_bullet,
        "word_count": lambda line: word_count(line, "cjk"),
        "line_key": line_key,
        "split_numbered": lambda line: split_numbered(number_line(0, line)),
        "classifier_line_features": lambda line: chunk_features([line]),
        "rules_chunk_program": lambda line: rules_refiner.chunk_program(number_line(0, line)),
        "rules_doc_program": rules_refiner.doc_program,
        "classifier_chunk_program": lambda line: classifier.chunk_programs(
            [number_line(0, line)]),
        "classifier_doc_program": lambda line: classifier.doc_programs([line]),
    }
    for shape, make in SHAPES.items():
        line = make(MB)
        split = min(_timed(line.split) for _ in range(3))
        for name, rule in every_rule.items():
            print(json.dumps({"shape": shape, "rule": name, "chars": len(line),
                              "seconds": _timed(lambda: rule(line)), "split_seconds": split}),
                  flush=True)


def huge() -> None:
    import polars as pl

    from prox_dagster.pipeline import chunk_shard, execute_shard, refine_chunks, \
        refine_documents
    from prox_dagster.refiners import build_refiner
    from prox_dagster.token_files import write_token_files
    from prox_dagster.tokenization import load_tokenizer

    tokenizer, refiner = load_tokenizer(), build_refiner("rules")
    tokenizer("warm up")
    rng = random.Random(0)
    vocabulary = ("the of and to in a is that for it as was with be by on not he this are or "
                  "from at which but have an they you were her she there been one all we").split()
    words, size = [], 0
    while size < 16 * MB:
        word = rng.choice(vocabulary) + ("." if rng.random() < 0.07 else "")
        words.append(word)
        size += len(word) + 1
    raw = pl.DataFrame({"id": ["huge"], "text": [" ".join(words)]})
    del words
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM: the peak measured is the stages'
    before = _status("VmRSS")
    doc_refined = refine_documents(raw, refiner).with_columns(
        pl.lit(True).alias("doc_keep"), pl.lit("keep_doc()").alias("doc_program"))
    chunked = chunk_shard(doc_refined, tokenizer)
    clean = execute_shard(doc_refined, refine_chunks(chunked, refiner), tokenizer)
    with tempfile.TemporaryDirectory() as folder:
        clean.write_parquet(f"{folder}/clean.parquet")
        del doc_refined, chunked
        written = write_token_files(f"{folder}/clean.parquet", folder, "huge", tokenizer,
                                    "parquet")
    print(json.dumps({"statuses": clean["status"].to_list(),
                      "tokens_in": int(clean["tokens_in"][0]),
                      "tokens_out": int(clean["tokens_out"][0]),
                      "tokens_written": written.tokens,
                      "peak_rise_bytes": _status("VmHWM") - before}), flush=True)


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


if __name__ == "__main__":
    {"rules": rules, "huge": huge}[sys.argv[1]]()
