"""Line kinds: the markup detector, the kinds the classifier names in its programs, what
``keep_kinds`` keeps, presets, and the errors a wrong setting gets before any shard is read."""

import json
from pathlib import Path

import pytest

from prox_dagster.chunking import number_line
from prox_dagster.programs import parse_program, removed_lines_by_kind
from prox_dagster.prompts import chunk_prompt
from prox_dagster.refiners.classifier import (ClassifierModelError, ClassifierRefiner,
                                              default_model_path, kind_runs)
from prox_dagster.refiners.kinds import parse_keep_kinds
from prox_dagster.refiners.markup import has_tex, is_markup

WEB = Path(__file__).resolve().parents[2] / "shared" / "data" / "web"


@pytest.mark.parametrize("line", [
    '<table border="0" cellpadding="2" cellspacing="0" width="100%">',
    "</dd>",
    "  • <img height=\"1\" width=\"1\" style=\"display:none\" src=\"http://b.example/p?c1=2\">",
    "#dfh{margin:0;padding:0;font-family:Arial}",
    ".nav li a { color: #333; text-decoration: none }",
    "margin: 0 auto;",
    "googletag.cmd.push(function() { googletag.display('div-gpt-ad-1'); });",
    "var _gaq = _gaq || []; _gaq.push(['_setAccount', 'UA-1']);",
    "  • {{ quickLink.title }}",
    '{"source":"http:\\/\\/example.com\\/wijax","varname":"wijax_1ee"}',
    "<?php echo $title; ?>",
])
def test_leaked_markup_is_named(line):
    assert is_markup(line)


@pytest.mark.parametrize("line", [
    # math is a math page's content
    r"where $\mathbf{x}$ and $\mathbf{y}$ are $1\times n$ vectors",
    r"\[\begin{array} {ll} {} &{4(-8)} \end{array}\]",
    # prose about markup, code a page shows, and citations with a template inside
    "The controls are implemented using HTML5 <video> tag features, and are hidden on load.",
    "let text_length: Option<usize> = text.as_ref().map(|s| s.len());",
    "    width: 100%;",
    "    <div class=\"flex items\">",
    '12. ^ Brugger, R. M. (1969). "A Note on Unbiased Estimation". The American Statistician. '
    "23 (4): 32.{{cite journal}}: CS1 maint",
    "<The Palace: Tale of Jang Noksu>",
    "Home | News | Sport",
    "",
])
def test_content_and_plain_chrome_are_not_markup(line):
    assert not is_markup(line)


def test_the_detector_reads_a_bounded_prefix_of_a_giant_line():
    assert is_markup("<div>" * 200_000)
    assert not is_markup("word " * 200_000 + "<div>")  # past the scanned prefix
    assert has_tex(r"the sum \frac{1}{n}") and not has_tex("costs $5 and $6")


def test_removals_name_their_kind_and_runs_split_where_the_kind_changes():
    removed = ["boilerplate", None, "boilerplate", "markup", None, "comment", None]
    blank = [False, True, False, False, False, False, True]
    assert kind_runs(removed, blank) == [(0, 2, "boilerplate"), (3, 3, "markup"),
                                         (5, 5, "comment")]
    counts: dict = {}
    removed_lines_by_kind("remove_lines(line_start=3, line_end=7)  # boilerplate\n"
                          "remove_lines(line_start=9, line_end=9)  # markup\n"
                          "remove_lines(line_start=1, line_end=2)\n"        # an LM's: no kind
                          "remove_lines(line_start=9, line_end=3)  # list", counts)
    assert counts == {"boilerplate": 5, "markup": 1}


PAGE = ["Home | News | Sport | Weather | Contact", "",
        "The council approved the new budget on Tuesday after a debate that ran late into "
        "the night, and residents will see lower fees for water next year.",
        "The mayor said the savings come from a new contract for waste collection that the "
        "city signed in the spring after three years of talks.",
        '<table border="0" cellpadding="2" cellspacing="0" width="100%">',
        "#dfh{margin:0;padding:0;font-family:Arial}",
        "Opposition members argued that the cuts to the library budget would hurt families "
        "who rely on free access to books and the internet.",
        "Privacy policy | Terms of use | Cookie settings", "© 2024 Daily News"]


def _program(refiner, lines):
    """The chunk program for ``lines`` as the pipeline asks for it: numbered, in a prompt."""
    numbered = "\n".join(number_line(i, line) for i, line in enumerate(lines))
    [program] = refiner.generate([chunk_prompt(numbered)], level="chunk")
    return program


def test_the_classifier_names_each_removed_kind_and_executes_as_before():
    refiner = ClassifierRefiner()
    program = _program(refiner, PAGE)
    parsed = parse_program(program, "chunk", "prox")
    assert parsed.ok, program
    counts: dict = {}
    removed_lines_by_kind(program, counts)
    assert counts.get("markup") == 2, program  # the two markup lines, as one run
    assert "  # boilerplate" in program
    # every removal names a kind the model knows
    assert all(line.rsplit("# ", 1)[1] in refiner.model.kinds
               for line in program.splitlines() if line.startswith("remove_lines("))
    # the sentences survive
    removed = {n for call in parsed.calls if call.name == "remove_lines"
               for n in range(call.args["line_start"], call.args["line_end"] + 1)}
    assert not removed & {2, 3, 6}


def test_keep_kinds_decides_what_survives_and_is_part_of_the_version():
    shipped = ClassifierRefiner()
    assert shipped.keep_kinds == ("main", "list")
    with_markup = ClassifierRefiner(keep_kinds="main, list, markup")
    assert with_markup.version != shipped.version
    assert "# markup" not in _program(with_markup, PAGE)
    strict = ClassifierRefiner(keep_kinds=["main"])
    lines = ["Ingredients", "  • 2 cups of flour", "  • 1 cup of sugar",
             "Mix the flour and the sugar in a large bowl, then add the eggs one at a time and "
             "beat the batter until it is smooth."]
    kinds = strict.line_kinds(lines, *strict._line_probabilities([lines])[0])
    assert kinds[2:] == ["list", "main"]
    # the list item the model keeps as content goes as a list when lists are not kept
    assert "remove_lines(line_start=2, line_end=2)  # list" in _program(strict, lines)
    assert "# main" not in _program(shipped, lines) and "# list" not in _program(shipped, lines)


def test_a_kind_the_model_was_not_trained_on_fails_before_any_shard(tmp_path):
    with pytest.raises(ClassifierModelError, match="keep_kinds names related, which"):
        ClassifierRefiner(keep_kinds="main,list,related")
    with pytest.raises(ClassifierModelError, match="'captions', which is no line kind"):
        ClassifierRefiner(keep_kinds="main,captions")
    with pytest.raises(ClassifierModelError, match="preset 'bold' is not one of"):
        ClassifierRefiner(preset="bold")
    assert parse_keep_kinds("") == ("main", "list")
    assert parse_keep_kinds("comment, main") == ("main", "comment")


def test_presets_move_the_thresholds_and_the_version():
    spec = json.loads(default_model_path().read_text())
    refiners = {preset: ClassifierRefiner(preset=preset) for preset in spec["operating_points"]}
    assert len({r.version for r in refiners.values()}) == 3
    for preset, refiner in refiners.items():
        point = spec["operating_points"][preset]
        assert refiner.thresholds == (point["sentence_threshold"], point["short_threshold"])
    precision, recall = refiners["precision"].thresholds, refiners["recall"].thresholds
    assert precision[0] >= recall[0] and precision[1] >= recall[1]


@pytest.mark.skipif(not (WEB / "dragnet").is_dir(), reason="needs ../shared/data/web")
def test_keeping_comments_keeps_the_lines_named_comment():
    docs = [json.loads(line) for line in (WEB / "dragnet" / "docs.jsonl").open()][:40]
    default = ClassifierRefiner()
    dialogue = ClassifierRefiner(keep_kinds="main,list,comment")
    texts = [d["text"] for d in docs]
    default.observe_shard(texts)
    dialogue.observe_shard(texts)
    named = kept = 0
    for text in texts:
        lines = text.split("\n")[:200]
        kinds = default.line_kinds(lines, *default._line_probabilities([lines])[0])
        comments = {i for i, kind in enumerate(kinds) if kind == "comment"}
        if not comments:
            continue
        program = parse_program(_program(dialogue, lines), "chunk", "prox")
        removed = {n for call in program.calls if call.name == "remove_lines"
                   for n in range(call.args["line_start"], call.args["line_end"] + 1)}
        named += len(comments)
        kept += len(comments - removed)
    assert named > 0 and kept == named


def test_the_code_location_refuses_kinds_its_model_cannot_name(tmp_path, monkeypatch):
    """Set by environment, as an operator does: the code location fails to load, naming the
    kind, and no shard folder is written."""
    from prox_dagster import definitions
    from prox_dagster.resources import RefinerResource

    monkeypatch.setenv("PROX_KEEP_KINDS", "main,list,related")
    with pytest.raises(ClassifierModelError, match="keep_kinds names related"):
        definitions.build_definitions(data_dir=tmp_path, refiner=RefinerResource.from_env())
    assert list(tmp_path.iterdir()) == []
