"""Does refining make a better model? The training ablation on the raw pages of
``../shared/data/web`` with the default CPU configuration (``prox-dagster ablate`` does the
same): pages with gold text are held out by a hash of their id, the others become the raw,
refined (the code location's refiner) and naive arms, and the same small Llama is trained on
each with 3 seeds. Targets: refined below raw by more than 2× the pooled std; the whole run in
under 15 minutes on 2 cores."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from prox_dagster.ablation import load_config, run_ablation
from prox_dagster.ablation_pages import page_arms, read_pages, split_pages
from prox_dagster.ablation_report import ablation_markdown

WEB = Path(__file__).resolve().parents[2] / "shared" / "data" / "web"
PLOT = Path(__file__).resolve().parents[1] / "docs" / "ablation_loss.svg"
HOLDOUT = 0.2
TOKENIZER = "sample"  # the code location's default pretraining tokenizer


def run(config: str = "cpu", fmt: str = "megatron") -> dict:
    if not WEB.is_dir():
        return {"skipped": f"{WEB} is missing (a fresh clone has no ../shared)"}
    from prox_dagster import definitions
    from prox_dagster.tokenization import load_tokenizer

    started = time.perf_counter()
    sets = sorted(p for p in WEB.iterdir() if (p / "docs.jsonl").is_file())
    pages = [page for path in sets for page in read_pages(path)]
    train, validation = split_pages(pages, HOLDOUT)
    tokenizer = load_tokenizer(TOKENIZER)
    with tempfile.TemporaryDirectory(prefix="bench-ablation-") as work:
        resources = definitions.build_definitions(data_dir=Path(work) / "data").resources
        refiner = resources["refiner"].resolved()
        arms = page_arms(train, Path(work) / "arms", tokenizer, refiner.get(),
                         refiner.chunk_tokenizer(), max_tokens=refiner.max_chunk_tokens,
                         policy=resources["policy"].settings(), fmt=fmt, log=print)
        arms_seconds = time.perf_counter() - started
        result = run_ablation(arms, validation, tokenizer, load_config(config),
                              tokenizer_label=TOKENIZER, log=print)
    report = result.to_json()
    seconds = time.perf_counter() - started
    by_pair = {(v["a"], v["b"]): v for v in report["verdicts"]}
    raw_tokens = next(a["tokens"] for a in report["arms"] if a["name"] == "raw")
    return {
        **report,
        "sets": [p.name for p in sets], "pages": len(pages), "training_pages": len(train),
        "held_out_pages": len(validation), "holdout": HOLDOUT,
        "share_of_raw_tokens": {a["name"]: a["tokens"] / raw_tokens for a in report["arms"]},
        "arms_seconds": arms_seconds, "total_seconds": seconds,
        "targets": {
            "refined_beats_raw": by_pair["refined", "raw"]["beats"],
            "naive_beats_raw": by_pair["naive", "raw"]["beats"],
            "refined_beats_naive": by_pair["refined", "naive"]["beats"],
            "naive_beats_refined": by_pair["naive", "refined"]["beats"],
            "under_15_minutes": seconds < 15 * 60,
        },
    }


def render(result: dict) -> str:
    targets = result["targets"]
    shares = ", ".join(f"{name} {share:.0%}" for name, share in
                       result["share_of_raw_tokens"].items())
    return "\n".join([
        f"{result['pages']:,} pages of {len(result['sets'])} sets; {result['held_out_pages']} "
        f"pages with gold text held out (a hash of their id, share {result['holdout']}), "
        f"{result['training_pages']:,} in every arm. Tokenizer `{result['tokenizer']}`; tokens "
        f"per arm as a share of raw: {shares}. The whole run took "
        f"{result['total_seconds'] / 60:.1f} minutes ({result['arms_seconds']:.0f} s to build "
        f"the arms) on {result['device']}.", "",
        ablation_markdown(result, PLOT.name),
        f"Targets: refined beats raw: **{targets['refined_beats_raw']}**; naive beats raw: "
        f"{targets['naive_beats_raw']}; refined beats naive: {targets['refined_beats_naive']}; "
        f"naive beats refined: {targets['naive_beats_refined']}; under 15 minutes: "
        f"{targets['under_15_minutes']}.",
    ])
