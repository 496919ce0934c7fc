"""Refinement quality on labelled web pages (../shared/data/web), through the real pipeline.

- The learned ``classifier`` refiner, leave-one-set-out: for every line-labelled set, a model
  trained on all the other sets (line sets and dclm-human-quality) is evaluated on it, at each
  preset (``precision``, ``balanced``, ``recall``), with what it keeps of each kind of line,
  its keep-recall per ``page_type`` where the set records one, its scores on short pages
  (under ``SHORT_PAGE_WORDS`` words of prose) and long ones, and the content share it estimated
  for the set beside the labelled share.
- dclm-human-quality (document labels) in five folds: trained on the line sets and four folds,
  evaluated on the fifth; the counts of the five folds are added up.
- The markup check on math-web-llmwebkit (math pages, no labels; :func:`math_check`): the
  shipped model's refiner on pages whose formulas are their content.
- The repaired ``rules`` refiner on every set (nothing to train).
- Beside both, the naive line filter (>= 15 words, or >= 6 ending in punctuation).
- Speed: 1,000 documents evaluated with the shipped classifier model, against the rules refiner
  on the same documents, in a fresh process.

Every number is :mod:`prox_dagster.evaluation`'s, with the default tokenizer and execution
policy: the pipeline's own stage functions.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from prox_dagster.evaluation import CONTENT_LABELS, Counts, LabelledDocument, LabelledSet, \
    breakdown, evaluate, kept_lines, load_labelled_set, naive_counts, naive_keep, refine_set, \
    refiner_counts
from prox_dagster.refiners import build_refiner
from prox_dagster.refiners.classifier import ClassifierRefiner
from prox_dagster.classifier_training import PRESETS, TrainingSettings, \
    train_classifier, write_model
from prox_dagster.refiners.markup import has_tex, is_markup
from prox_dagster.tokenization import load_tokenizer
from prox_dagster.words import sentence_like, word_count

WEB = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "web"
LINE_SETS = ["turku-line-quality", "modern-wceb", "scrapinghub-aeb", "magic-html-bench",
             "dragnet", "cleanportaleval"]
DOC_SET = "dclm-human-quality"
MATH_SET = "math-web-llmwebkit"
FOLDS = 5
SHORT_PAGE_WORDS = 50
CONTENT_PAGE_TYPES = ("article", "documentation", "forum")


def _summary(metrics: dict) -> dict:
    keys = ("keep_precision", "keep_recall", "keep_f1", "sentence_recall", "short_line_recall",
            "noise_f1", "content_lost_to_doc_drops", "doc_keep_f1", "bad_dropped",
            "good_dropped", "token_retention", "kept_by_kind", "markup_share_of_kept", "docs")
    return {k: metrics[k] for k in keys if metrics.get(k) is not None}


def prose_words(doc: LabelledDocument) -> int:
    return sum(word_count(line, "cjk") for line in doc.text.split("\n")
               if sentence_like(line, "cjk"))


def held_out(labelled: LabelledSet, refiner: ClassifierRefiner, tokenizer) -> dict:
    """One held-out set through the pipeline: the refiner's and the naive filter's scores, per
    page type and per page length, and the content share the refiner estimated for it."""
    clean, seconds = refine_set(labelled, refiner, tokenizer)
    learned = refiner_counts(labelled, clean, seconds).metrics()
    naive = naive_counts(labelled).metrics()
    content = [c for d in labelled.documents if d.line_labels for c in d.line_labels
               if c != "_"]
    pages = {kind: {"docs": len(entry["documents"]),
                    "keep_precision": entry["refiner"]["keep_precision"],
                    "keep_recall": entry["refiner"]["keep_recall"],
                    "keep_f1": entry["refiner"]["keep_f1"],
                    "naive_keep_f1": entry["naive_filter"]["keep_f1"]}
             for kind, entry in breakdown(labelled, clean, lambda d: d.page_type).items()}
    status = dict(zip(clean["id"].to_list(), clean["status"].to_list()))
    lengths = {kind: {"docs": len(entry["documents"]),
                      "keep_precision": entry["refiner"]["keep_precision"],
                      "keep_recall": entry["refiner"]["keep_recall"],
                      "naive_keep_precision": entry["naive_filter"]["keep_precision"],
                      "dropped_docs": sum(status[d.id] not in ("kept", "fallback_raw")
                                          for d in entry["documents"])}
               for kind, entry in breakdown(
                   labelled, clean, lambda d: f"under {SHORT_PAGE_WORDS} prose words"
                   if prose_words(d) < SHORT_PAGE_WORDS else "longer", min_kinds=1).items()}
    return {"classifier": _summary(learned), "naive_filter": _summary(naive),
            "gain_over_naive": round(learned["keep_f1"] - naive["keep_f1"], 4),
            "content_share": {"estimated": round(refiner.prior, 4),
                              "labelled": round(sum(c in CONTENT_LABELS for c in content)
                                                / max(len(content), 1), 4)},
            "by_page_type": pages, "by_page_length": lengths}


def math_check(refiner, tokenizer) -> dict:
    """Do math pages keep their formulas? math-web-llmwebkit has no labels, so every line that
    holds TeX (a command such as ``\\frac``, ``$...$``, ``\\(``) is taken as the page's content:
    the formulas are what a math page is for. Reports the share of those lines the refiner
    keeps (beside the naive filter's), the share the markup detector names markup (it must be
    none), the share of the pages' sentences kept, and the pages dropped."""
    documents = []
    with open(WEB / MATH_SET / "docs.jsonl", encoding="utf-8") as handle:
        for n, raw in enumerate(handle):
            record = json.loads(raw)
            documents.append(LabelledDocument(str(record.get("id") or n), record["text"],
                                              record.get("url"), None, None))
    labelled = LabelledSet(MATH_SET, str(WEB / MATH_SET), documents)
    clean, _ = refine_set(labelled, refiner, tokenizer)
    by_id = {row[0]: row[1:] for row in clean.select("id", "text", "status").iter_rows()}
    tex = tex_kept = tex_naive = tex_markup = sentences = sentences_kept = dropped = 0
    for doc in documents:
        text, status = by_id[doc.id]
        alive = status in ("kept", "fallback_raw")
        dropped += not alive
        lines = doc.text.split("\n")
        for line, kept in zip(lines, kept_lines(doc.text, text or "")):
            kept = kept and alive
            if has_tex(line):
                tex += 1
                tex_kept += kept
                tex_naive += naive_keep(line)
                tex_markup += is_markup(line)
            elif sentence_like(line, "cjk"):
                sentences += 1
                sentences_kept += kept
    return {"docs": len(documents), "docs_dropped": dropped, "tex_lines": tex,
            "tex_lines_kept": round(tex_kept / max(tex, 1), 4),
            "tex_lines_kept_by_naive_filter": round(tex_naive / max(tex, 1), 4),
            "tex_lines_called_markup": tex_markup,
            "other_sentences_kept": round(sentences_kept / max(sentences, 1), 4)}


SPEED_ROUNDS = 3


def speed() -> dict[str, float]:
    """Seconds to evaluate 1,000 documents with the shipped classifier model and with the rules
    refiner, the same documents in the same process: the median of ``SPEED_ROUNDS`` rounds, the
    two refiners interleaved (this machine's speed drifts by a quarter from run to run)."""
    tokenizer = load_tokenizer("sample")
    names = ("dragnet", "modern-wceb", "magic-html-bench", "scrapinghub-aeb")
    pool = [d for name in names for d in load_labelled_set(WEB / name).documents][:1000]
    thousand = LabelledSet("speed-1000", "mixed", pool)
    refiners = {"classifier": build_refiner("classifier"), "rules": build_refiner("rules")}
    rounds: dict[str, list[float]] = {name: [] for name in refiners}
    for _ in range(SPEED_ROUNDS):
        for name, refiner in refiners.items():
            started = time.perf_counter()
            evaluate([thousand], refiner, tokenizer)
            rounds[name].append(time.perf_counter() - started)
    return {name: round(statistics.median(times), 2) for name, times in rounds.items()}


def run() -> dict:
    if not WEB.is_dir():
        return {"skipped": "needs ../shared/data/web"}
    tokenizer = load_tokenizer("sample")
    sets = {name: load_labelled_set(WEB / name) for name in [*LINE_SETS, DOC_SET]}
    cache: dict = {}
    settings = TrainingSettings()
    log = print
    out: dict = {"protocol": "leave-one-set-out for line sets; 5-fold for dclm-human-quality",
                 "tokenizer": "sample", "preset": settings.preset, "line_sets": {},
                 "presets": {}, "dclm": {}}
    with tempfile.TemporaryDirectory() as folder:
        for held in LINE_SETS:
            started = time.perf_counter()
            train = [s for name, s in sets.items() if name != held]
            path = Path(folder) / f"without-{held}.json"
            write_model(train_classifier(train, tokenizer, settings, log=lambda _: None,
                                         cache=cache), path)
            for preset in PRESETS:
                result = held_out(sets[held], ClassifierRefiner(path, preset=preset), tokenizer)
                if preset == settings.preset:
                    out["line_sets"][held] = result
                else:
                    out["presets"].setdefault(preset, {})[held] = {
                        k: result["classifier"][k] for k in
                        ("keep_precision", "keep_recall", "keep_f1", "sentence_recall")} | {
                        "gain_over_naive": result["gain_over_naive"]}
            entry = out["line_sets"][held]
            log(f"{held}: classifier keep-F1 {entry['classifier']['keep_f1']:.3f} (sentence "
                f"recall {entry['classifier']['sentence_recall']:.3f}) vs naive "
                f"{entry['naive_filter']['keep_f1']:.3f} "
                f"({time.perf_counter() - started:.0f}s)")

        docs = sets[DOC_SET].documents
        folds = [LabelledSet(f"{DOC_SET}#{k}", f"{sets[DOC_SET].path}#{k}", docs[k::FOLDS])
                 for k in range(FOLDS)]
        total = Counts()
        for k, fold in enumerate(folds):
            train = [sets[name] for name in LINE_SETS] + [f for j, f in enumerate(folds)
                                                          if j != k]
            path = Path(folder) / f"dclm-fold-{k}.json"
            write_model(train_classifier(train, tokenizer, settings, log=lambda _: None,
                                         cache=cache), path)
            clean, seconds = refine_set(fold, ClassifierRefiner(path), tokenizer)
            total.add(refiner_counts(fold, clean, seconds))
        out["dclm"]["classifier"] = _summary(total.metrics())
        log(f"dclm (5 folds): {out['dclm']['classifier']}")

    out["math"] = math_check(build_refiner("classifier"), tokenizer)
    log(f"math pages: {out['math']}")
    rules = evaluate(list(sets.values()), build_refiner("rules"), tokenizer)
    out["rules"] = {entry["set"]: {"rules": _summary(entry["refiner"]),
                                   "naive_filter": _summary(entry["naive_filter"])}
                    for entry in rules.sets}

    # speed in a process of its own, as a pipeline step runs: at the end of this one (which
    # holds every set's training data by now) the same evaluation took 60 s, 47 s in a fresh one
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        timings = pool.submit(speed).result()
    out["speed_1000_docs_s"] = timings
    out["speed_classifier_over_rules"] = round(timings["rules"] / timings["classifier"], 3)

    line_sets = out["line_sets"].values()
    gains = [v["gain_over_naive"] for v in line_sets]
    rules_gains = [v["rules"]["keep_f1"] - v["naive_filter"]["keep_f1"]
                   for v in out["rules"].values() if "keep_f1" in v["rules"]]
    dclm = out["dclm"]["classifier"]
    content_pages = [page["keep_recall"] for v in line_sets
                     for kind, page in v["by_page_type"].items() if kind in CONTENT_PAGE_TYPES]
    out["targets"] = {
        "every_set_gain_at_least_0.05": all(g >= 0.05 for g in gains),
        "mean_gain_at_least_0.15": statistics.mean(gains) >= 0.15,
        "every_set_sentence_recall_at_least_0.90": all(
            v["classifier"]["sentence_recall"] >= 0.90 for v in line_sets),
        "content_page_types_recall_at_least_0.80": all(r >= 0.80 for r in content_pages),
        "dclm_keep_good_f1_at_least_0.82": dclm.get("doc_keep_f1", 0) >= 0.82,
        "dclm_55pct_of_bad_dropped": dclm.get("bad_dropped", 0) >= 0.55,
        "dclm_at_most_10pct_good_dropped": dclm.get("good_dropped", 1) <= 0.10,
        "markup_under_1pct_of_kept_lines": all(
            (v["classifier"].get("markup_share_of_kept") or 0) < 0.01 for v in line_sets),
        "math_tex_lines_never_called_markup": out["math"]["tex_lines_called_markup"] == 0,
        "rules_beat_naive_on_average": statistics.mean(rules_gains) > 0,
        "1000_docs_under_60s": timings["classifier"] < 60,
    }
    out["mean_gain_over_naive"] = round(statistics.mean(gains), 4)
    out["rules_mean_gain_over_naive"] = round(statistics.mean(rules_gains), 4)
    return out




def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(result: dict) -> str:
    """The tables of ``docs/quality.md`` from a run's results."""
    sets = result["line_sets"]
    out = [f"Leaving each set out, preset `{result['preset']}`, tokenizer "
           f"`{result['tokenizer']}`; mean keep-F1 gain over the naive filter "
           f"**{result['mean_gain_over_naive']:+.3f}** (`rules`: "
           f"{result['rules_mean_gain_over_naive']:+.3f}).", "",
           "| set | naive F1 | `rules` F1 | classifier F1 (gain) | P / R | recall: sentences / "
           "short lines | markup in kept | lost to doc drops | content share: estimated / "
           "labelled |", "|---|---|---|---|---|---|---|---|---|"]
    for name, entry in sets.items():
        c, n = entry["classifier"], entry["naive_filter"]
        rules = result["rules"].get(name, {}).get("rules", {})
        share = entry["content_share"]
        out.append(
            f"| {name} | {_f(n['keep_f1'])} | {_f(rules.get('keep_f1'))} | "
            f"**{_f(c['keep_f1'])}** ({entry['gain_over_naive']:+.3f}) | "
            f"{_f(c['keep_precision'])} / {_f(c['keep_recall'])} | "
            f"{_f(c['sentence_recall'])} / {_f(c.get('short_line_recall'))} | "
            f"{_f(c.get('markup_share_of_kept'), 4)} | {_f(c.get('content_lost_to_doc_drops'))}"
            f" | {_f(share['estimated'])} / {_f(share['labelled'])} |")
    presets = result["presets"]
    out += ["", "Each preset on the same held-out models: keep-F1 (gain over naive), sentence "
            "recall.", "", "| set | " + " | ".join(
                [*presets, result["preset"] + " (default)"]) + " |",
            "|---|" + "---|" * (len(presets) + 1)]
    for name, entry in sets.items():
        cells = [f"{_f(p[name]['keep_f1'])} ({p[name]['gain_over_naive']:+.3f}), "
                 f"{_f(p[name]['sentence_recall'])}" for p in presets.values()]
        c = entry["classifier"]
        cells.append(f"{_f(c['keep_f1'])} ({entry['gain_over_naive']:+.3f}), "
                     f"{_f(c['sentence_recall'])}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    kinds = sorted({k for e in sets.values() for k in e["classifier"].get("kept_by_kind", {})})
    out += ["", "Share of each kind of labelled line kept, classifier / naive filter (main and "
            "list: content, by shape; markup: by the detector; the rest: noise, by the label's "
            "letter).", "", "| set | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for name, entry in sets.items():
        mine, naive = entry["classifier"]["kept_by_kind"], entry["naive_filter"]["kept_by_kind"]
        out.append(f"| {name} | " + " | ".join(
            f"{_f(mine.get(k), 2)} / {_f(naive.get(k), 2)}" if k in mine else "" for k in kinds)
            + " |")
    out += ["", "By page type, where a set records one: docs, keep-P / keep-R / keep-F1 "
            "(naive keep-F1).", "", "| set | page type | docs | classifier P / R / F1 | "
            "naive F1 |", "|---|---|---|---|---|"]
    for name, entry in sets.items():
        for kind, page in entry["by_page_type"].items():
            out.append(f"| {name} | {kind} | {page['docs']} | {_f(page['keep_precision'])} / "
                       f"{_f(page['keep_recall'])} / {_f(page['keep_f1'])} | "
                       f"{_f(page['naive_keep_f1'])} |")
    out += ["", f"Short pages (under {SHORT_PAGE_WORDS} words of prose) and the rest: keep-"
            "precision and keep-recall, the naive filter's precision, and pages dropped.", "",
            "| set | pages | docs | P / R | naive P | dropped |", "|---|---|---|---|---|---|"]
    for name, entry in sets.items():
        for kind, page in entry["by_page_length"].items():
            out.append(f"| {name} | {kind} | {page['docs']} | {_f(page['keep_precision'])} / "
                       f"{_f(page['keep_recall'])} | {_f(page['naive_keep_precision'])} | "
                       f"{page['dropped_docs']} |")
    dclm = result["dclm"]["classifier"]
    math = result["math"]
    naive_tex = math["tex_lines_kept_by_naive_filter"]
    out += ["", "| dclm-human-quality, 5 folds | keep-good F1 | bad dropped | good dropped |",
            "|---|---|---|---|",
            f"| classifier | **{_f(dclm.get('doc_keep_f1'))}** | {dclm.get('bad_dropped', 0):.1%}"
            f" | {dclm.get('good_dropped', 0):.1%} |", "",
            f"Math pages ({MATH_SET}, {math['docs']} pages, shipped model): of "
            f"{math['tex_lines']} lines holding TeX, the classifier keeps "
            f"{math['tex_lines_kept']:.1%} (the naive filter {naive_tex:.1%}), the markup "
            f"detector calls {math['tex_lines_called_markup']} of "
            f"them markup; {math['other_sentences_kept']:.1%} of the other sentences kept, "
            f"{math['docs_dropped']} pages dropped.", "",
            f"1,000 documents evaluated in {result['speed_1000_docs_s']['classifier']} s with "
            f"the classifier, {result['speed_1000_docs_s']['rules']} s with `rules` (2 cores, a "
            f"fresh process, median of {SPEED_ROUNDS} interleaved rounds).", "", "| target | met |", "|---|---|"]
    out += [f"| {name} | {'yes' if met else '**no**'} |"
            for name, met in result["targets"].items()]
    return "\n".join(out)
