"""The built-in evaluation: line alignment, scoring, labelled-set errors, the CLI."""

import json
import os
import subprocess
import sys

import pytest

from prox_dagster.evaluation import (EvaluationError, evaluate, evaluation_csv,
                                     evaluation_markdown, evaluation_tables, load_labelled_set,
                                     naive_keep)
from prox_dagster.execute import kept_lines
from prox_dagster.programs import format_call
from prox_dagster.refiners.rules import RulesRefiner
from prox_dagster.words import sentence_like
from prox_dagster.prompts import document_of


def test_kept_lines_follows_removals_and_rewrites():
    original = "menu\nA long first line.\nads\nSecond línea â€™ here\nfooter"
    assert kept_lines(original, original) == [True] * 5
    assert kept_lines(original, "") == [False] * 5
    assert kept_lines(original, "A long first line.\nSecond línea ’ here") == \
        [False, True, False, True, False]
    # a repeated line: the copy that survives is the one in order
    assert kept_lines("x\ny\nx", "y\nx") == [False, True, True]


def test_naive_filter_is_the_two_line_rule():
    assert naive_keep(" ".join(["word"] * 15))
    assert naive_keep("Six words that end in a stop.")
    assert not naive_keep("Six words that end without stop")
    assert not naive_keep("Home")


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


LINES = ["Home | News | Sport", "",
         "The council approved the new budget on Tuesday after a long debate.",
         "Residents will see lower fees for water and waste collection next year.",
         "Share this:", "© 2024 Daily"]
LABELS = "B_MMBB"


class KeepAll(RulesRefiner):
    """A refiner that keeps every document and every chunk."""

    def generate(self, prompts, *, level):
        return ["keep_doc()" if level == "doc" else "keep_chunk()" for _ in prompts]


class OracleRefiner:
    """A refiner that knows the labels (a test double at the model edge): it removes exactly
    the noise lines, so every metric of the real scoring path must be perfect."""

    backend = "oracle"
    dialect = "prox"
    model_id = "oracle"
    version = "oracle:labels@0"
    tokenizer = None
    max_doc_prompt_tokens = None

    def __init__(self, labels_by_text):
        self.labels = labels_by_text

    def generate(self, prompts, *, level):
        out = []
        for prompt in prompts:
            text = document_of(prompt, level)
            if level == "doc":
                out.append("keep_doc()" if self.labels[text][1] else "drop_doc()")
                continue
            calls = []
            for raw in text.split("\n"):
                number = int(raw[1:raw.index("]")])
                body = raw[raw.index("]") + 1:]
                for doc, (labels, _) in self.labels.items():
                    lines = doc.split("\n")
                    if number < len(lines) and lines[number] == body:
                        if labels[number] == "B":
                            calls.append(format_call("remove_lines", line_start=number,
                                                     line_end=number))
                        break
            out.append("\n".join(calls) or "keep_chunk()")
        return out


def test_scores_through_the_real_pipeline(tmp_path, sample_tokenizer):
    text = "\n".join(LINES)
    junk = "buy cheap pills\nbuy cheap pills now\nclick here"
    path = _write(tmp_path / "set.jsonl", [
        {"id": "a", "text": text, "line_labels": LABELS, "label": 1},
        {"id": "b", "text": junk, "line_labels": "BBB", "label": 0},
    ])
    labelled = load_labelled_set(path)
    oracle = OracleRefiner({text: (LABELS, True), junk: ("BBB", False)})
    result = evaluate([labelled], oracle, sample_tokenizer)
    mine = result.overall["refiner"]
    assert mine["keep_precision"] == mine["keep_recall"] == mine["keep_f1"] == 1.0
    assert mine["noise_f1"] == 1.0 and mine["content_lost_to_doc_drops"] == 0.0
    assert mine["doc_keep_f1"] == 1.0 and mine["bad_dropped"] == 1.0
    assert mine["good_dropped"] == 0.0 and mine["lines"] == 8
    naive = result.overall["naive_filter"]
    # the naive filter keeps the two sentences only, and drops the junk page (too few words)
    assert naive["keep_precision"] == 1.0 and naive["keep_recall"] == 1.0
    assert result.refiner_version == "oracle:labels@0"
    csv_text = evaluation_csv(result)
    assert csv_text.splitlines()[0].startswith("set,system,docs,lines,keep_precision")
    assert len(csv_text.splitlines()) == 5  # header + (set, overall) x (refiner, naive)
    markdown = evaluation_markdown(result)
    assert "| set | system |" in markdown and "keep-F1 per set" in markdown


def test_a_refiner_that_keeps_everything_scores_the_content_share(tmp_path, sample_tokenizer):
    path = _write(tmp_path / "set.jsonl", [{"id": "a", "text": "\n".join(LINES),
                                            "line_labels": LABELS}])
    result = evaluate([load_labelled_set(path)], KeepAll(), sample_tokenizer)
    mine = result.overall["refiner"]
    assert mine["keep_recall"] == 1.0 and mine["keep_precision"] == 0.4  # 2 of 5 lines
    assert mine["doc_keep_f1"] is None and mine["labelled_docs"] == 0


def test_recall_is_split_into_sentences_and_short_lines(tmp_path, sample_tokenizer):
    chinese = "市政府周二批准了新的预算方案。"
    assert sentence_like(chinese, "cjk") and not naive_keep(chinese)
    assert not sentence_like("  • Apples and pears", "cjk")
    path = _write(tmp_path / "set.jsonl", [{
        "id": "a", "text": "\n".join([*LINES, "  • Apples and pears", chinese]),
        "line_labels": LABELS + "MM"}])
    result = evaluate([load_labelled_set(path)], KeepAll(), sample_tokenizer)
    mine, naive = result.overall["refiner"], result.overall["naive_filter"]
    assert mine["sentence_recall"] == mine["short_line_recall"] == 1.0
    # the naive filter keeps the two English sentences: not the list item, nor the Chinese
    # sentence (one word to str.split)
    assert naive["keep_recall"] == 0.5
    assert naive["sentence_recall"] == 0.6667 and naive["short_line_recall"] == 0.0
    assert "sentence recall" in evaluation_markdown(result)


def test_the_tables_fit_a_narrow_terminal_without_cutting_a_number(tmp_path,
                                                                 sample_tokenizer):
    import re

    from rich.console import Console

    from prox_dagster.cli import _evaluation_tables
    from prox_dagster.evaluation import TABLES, table_rows
    from prox_dagster.refiners.rules import RulesRefiner

    lines_only = _write(tmp_path / "a-line-labelled-set-with-a-long-name.jsonl",
                        [{"id": "a", "text": "\n".join(LINES), "line_labels": LABELS}])
    docs_only = _write(tmp_path / "pages.jsonl",
                       [{"id": "p", "text": "\n".join(LINES[2:4]), "label": 1},
                        {"id": "q", "text": "buy cheap pills\nclick here", "label": 0}])
    result = evaluate([load_labelled_set(lines_only), load_labelled_set(docs_only)],
                      RulesRefiner(), sample_tokenizer)
    tables = {title: table_rows(result, columns) for title, _, columns in TABLES}
    # a set has a row only in the tables it has values for
    assert {row[0] for row in tables["lines"]} == {"a-line-labelled-set-with-a-long-name",
                                                   "overall"}
    assert {row[0] for row in tables["documents"]} == {"pages", "overall"}
    assert {row[0] for row in tables["cost"]} == {"a-line-labelled-set-with-a-long-name",
                                                  "pages", "overall"}
    for width in (80, 200):
        console = Console(width=width, record=True)
        for table in _evaluation_tables(result, console.width):
            console.print(table)
        shown = console.export_text()
        assert max(map(len, shown.splitlines())) <= width and "…" not in shown
        for rows in tables.values():
            for row in rows:  # the system and every value, whole and in order, on one line
                assert re.search(r" +".join(map(re.escape, row[1:])), shown), row
        # headers wrap between their words only where there is no room for them whole
        assert ("sentence recall" in shown) == (width == 200)
    # and at 200 columns a long set name is whole in every table
    assert len(re.findall(r"a-line-labelled-set-with-a-long-name +(rules|naive_filter) ",
                          shown)) == 6  # lines, cost and kinds tables, two systems each
    markdown = evaluation_markdown(result)
    assert [line.split(":")[0] for line in markdown.splitlines() if line.startswith("**")] == \
        ["**lines**", "**documents**", "**cost**", "**kinds**"]


def test_a_set_without_labels_is_an_error_naming_the_file(tmp_path):
    path = _write(tmp_path / "nolabels.jsonl", [{"id": "a", "text": "hello"}])
    with pytest.raises(EvaluationError, match="nolabels.jsonl.*no document has line labels"):
        load_labelled_set(path)
    with pytest.raises(EvaluationError, match="no such file"):
        load_labelled_set(tmp_path / "missing.jsonl")


def test_label_strings_of_the_wrong_length_are_reported_and_not_scored(tmp_path,
                                                                        sample_tokenizer):
    path = _write(tmp_path / "set.jsonl", [
        {"id": "ok", "text": "\n".join(LINES), "line_labels": LABELS},
        {"id": "short", "text": "a\nb\nc", "line_labels": "MM"},
    ])
    labelled = load_labelled_set(path)
    assert [s["id"] for s in labelled.skipped] == ["short"]
    assert "length 2 for 3 lines" in labelled.skipped[0]["reason"]
    result = evaluate([labelled], OracleRefiner({"\n".join(LINES): (LABELS, True),
                                                 "a\nb\nc": ("BBB", True)}), sample_tokenizer)
    assert result.overall["refiner"]["lines"] == 5  # only the well-labelled document
    assert result.sets[0]["skipped"][0]["id"] == "short"


@pytest.mark.integration
def test_cli_eval_scores_the_loaded_refiner(tmp_path, sample_crawl):
    labelled = sample_crawl / "labels" / "sample-crawl.labelled.jsonl"
    env = {**os.environ, "PROX_REFINER_BACKEND": "rules"}
    proc = subprocess.run([sys.executable, "-m", "prox_dagster.cli", "eval", str(labelled),
                           "--format", "json", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["refiner_version"].startswith("rules:rules-v3@")
    assert result["sets"][0]["docs"] == 120
    rules, naive = result["overall"]["refiner"], result["overall"]["naive_filter"]
    assert rules["keep_f1"] > naive["keep_f1"]  # on the sample crawl the rules are better
    assert rules["bad_dropped"] >= 0.9 and rules["good_dropped"] <= 0.1
    assert (tmp_path / "out" / "evaluation.csv").read_text().startswith("set,system")

    bad = _write(tmp_path / "plain.jsonl", [{"id": "x", "text": "no labels here"}])
    proc = subprocess.run([sys.executable, "-m", "prox_dagster.cli", "eval", str(bad)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2 and "plain.jsonl" in proc.stdout + proc.stderr

    proc = subprocess.run([sys.executable, "-m", "prox_dagster.cli", "eval", str(labelled),
                           "--backend", "classifier", "--model", str(tmp_path / "none.json")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2 and "none.json" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_evaluation_scores_each_page_type_and_each_kind_of_line(tmp_path,
                                                                    sample_tokenizer):
    listing = ("Shop\n  • Fresh apples and pears from the valley\n  • Plums picked this week\n"
               "  • Cherries, sweet and dark\n<table border=\"0\" cellpadding=\"2\">\nCart")
    path = _write(tmp_path / "set.jsonl", [
        {"id": "a", "text": "\n".join(LINES), "line_labels": LABELS, "page_type": "article"},
        {"id": "b", "text": listing, "line_labels": "BMMMBB", "page_type": "listing"},
        {"id": "c", "text": "\n".join(LINES + ["Great read, thanks!"]),
         "line_labels": LABELS + "C", "page_type": "article"}])
    labelled = load_labelled_set(path)
    assert labelled.notes == []
    entry = evaluate([labelled], KeepAll(), sample_tokenizer).sets[0]
    pages = entry["by_page_type"]
    article, shop = pages["article"], pages["listing"]
    assert (article["docs"], shop["docs"]) == (2, 1)
    # the naive filter keeps the articles' sentences and none of the list items
    assert (article["naive_filter"]["keep_recall"], shop["naive_filter"]["keep_recall"]) == \
        (1.0, 0.0)
    assert article["refiner"]["keep_recall"] == shop["refiner"]["keep_recall"] == 1.0
    assert shop["refiner"]["keep_f1"] == 0.6667  # 3 of the 6 lines kept are content
    # per kind of line: content by shape, noise by its letter, markup by the detector
    kinds = entry["refiner"]["kept_by_kind"]
    assert set(kinds) == {"main", "list", "boilerplate", "comment", "markup"}
    assert all(share == 1.0 for share in kinds.values())  # everything was kept
    assert entry["refiner"]["markup_share_of_kept"] == round(1 / 17, 4)
    assert entry["naive_filter"]["kept_by_kind"]["list"] == 0.0
    assert entry["naive_filter"]["markup_share_of_kept"] == 0.0
    # in the tables the CLI and the asset show, and in the CSV
    evaluation = evaluate([labelled], KeepAll(), sample_tokenizer)
    kinds_table = [t for t in evaluation_tables(evaluation) if t[0] == "kinds"]
    [(_, _, headers, rows)] = kinds_table
    assert headers == ["set", "system", "main", "list", "comment", "boilerplate", "markup"]
    assert rows[1][:2] == ["set", "naive_filter"] and rows[1][3] == "0.000"  # no list kept
    header = evaluation_csv(evaluation).splitlines()[0].split(",")
    assert {"kept_main", "kept_markup", "markup_share_of_kept"} <= set(header)
    # a set with no page types, or one, has no breakdown
    one = _write(tmp_path / "one.jsonl", [{"id": "a", "text": "\n".join(LINES),
                                           "line_labels": LABELS, "page_type": "article"}])
    assert evaluate([load_labelled_set(one)], KeepAll(), sample_tokenizer
                    ).sets[0]["by_page_type"] == {}


def test_labels_in_letters_that_name_no_kind_are_scored_as_binary_and_said_so(
        tmp_path, sample_tokenizer):
    odd = _write(tmp_path / "odd.jsonl", [
        {"id": "a", "text": "\n".join(LINES), "line_labels": "X_MMQB"}])
    labelled = load_labelled_set(odd)
    [note] = labelled.notes
    assert "'Q', 'X'" in note and "scored as binary" in note
    plain = _write(tmp_path / "plain.jsonl", [
        {"id": "a", "text": "\n".join(LINES), "line_labels": "B_MMBB"}])
    odd_entry, plain_entry = evaluate([labelled, load_labelled_set(plain)], KeepAll(),
                                      sample_tokenizer).sets
    assert odd_entry["notes"] == [note]
    # the same scores as the same lines labelled content / noise; the odd ones counted as noise
    for key in ("keep_precision", "keep_recall", "keep_f1"):
        assert odd_entry["refiner"][key] == plain_entry["refiner"][key]
    assert odd_entry["refiner"]["kept_by_kind"] == {"boilerplate": 1.0, "main": 1.0,
                                                    "noise": 1.0}
    env = {**os.environ, "PROX_REFINER_BACKEND": "rules"}
    proc = subprocess.run([sys.executable, "-m", "prox_dagster.cli", "eval", str(odd)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and "scored as binary" in " ".join(proc.stdout.split())
