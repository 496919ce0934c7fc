"""The learned ``classifier`` refiner: training, the model file, programs, quality, bad models."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from prox_dagster.evaluation import evaluate, load_labelled_set
from prox_dagster.programs import parse_program
from prox_dagster.prompts import chunk_prompt, doc_prompt
from prox_dagster.refiners import build_refiner
from prox_dagster.refiners.classifier import (ClassifierModel, ClassifierModelError,
                                              ClassifierRefiner, default_model_path)
from prox_dagster.sample import LABELLED_SET, write_sample_crawl


@pytest.fixture(scope="module")
def sample_model(tmp_path_factory, sample_crawl):
    """A classifier trained with the CLI on the sample crawl's labelled set."""
    out = tmp_path_factory.mktemp("model") / "sample-model.json"
    proc = subprocess.run(
        [sys.executable, "-m", "prox_dagster.cli", "train-refiner",
         str(sample_crawl / "labels" / LABELLED_SET), "--out", str(out), "--name", "sample"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PROX_CLASSIFIER_MODEL=" in proc.stdout
    return out


@pytest.fixture(scope="module")
def held_out_sample(tmp_path_factory):
    """Another sample crawl (other seed): pages the sample model never saw."""
    out = tmp_path_factory.mktemp("held_out")
    write_sample_crawl(out, n_shards=2, docs_per_shard=40, seed=7)
    return load_labelled_set(out / "labels" / LABELLED_SET)


def test_model_file_is_json_text_and_training_is_deterministic(sample_model, tmp_path,
                                                               sample_crawl):
    spec = json.loads(sample_model.read_text())  # plain JSON: nothing to unpickle
    assert spec["format"] == "prox-dagster/line-classifier" and spec["format_version"] == 4
    assert all(spec[f"{m}_model"].startswith("tree") for m in ("line", "doc", "share"))
    # the sample crawl labels one kind of noise only: nothing to tell apart
    assert spec["kind_model"] is None and spec["noise_kinds"] == ["boilerplate"]
    assert spec["training"]["sets"][0]["name"] == "sample-crawl.labelled"
    model = ClassifierModel(sample_model)
    assert model.name == "sample" and 0 < model.line_threshold < 1
    assert set(model.operating_points) == {"precision", "balanced", "recall"}
    assert model.preset == "balanced" and 0 < model.typical_prior < 1
    assert all(0 < t < 1 for point in model.operating_points.values() for t in point)
    assert model.kinds == ("main", "list", "boilerplate", "markup")
    from prox_dagster.classifier_training import train_classifier, write_model
    from prox_dagster.tokenization import load_tokenizer

    again = write_model(train_classifier([load_labelled_set(sample_crawl / "labels" /
                                                            LABELLED_SET)],
                                         load_tokenizer("sample"), name="sample",
                                         log=lambda _: None), tmp_path / "again.json")
    assert again == hashlib.sha256(sample_model.read_bytes()).hexdigest()


def test_programs_parse_and_beat_the_naive_filter_on_unseen_pages(sample_model,
                                                                  held_out_sample,
                                                                  sample_tokenizer):
    refiner = ClassifierRefiner(sample_model)
    docs = held_out_sample.documents[:10]
    refiner.observe_shard([d.text for d in docs])
    doc_programs = refiner.generate([doc_prompt(d.text) for d in docs], level="doc")
    assert all(parse_program(p, "doc").ok for p in doc_programs)
    chunk_programs = refiner.generate([chunk_prompt("[000]Home | News\n[001]" + docs[0].text)],
                                      level="chunk")
    assert all(parse_program(p, "chunk").ok for p in chunk_programs)

    result = evaluate([held_out_sample], refiner, sample_tokenizer).overall
    mine, naive = result["refiner"], result["naive_filter"]
    assert mine["keep_f1"] >= naive["keep_f1"] + 0.05
    assert mine["keep_recall"] >= 0.8
    assert mine["bad_dropped"] >= 0.8 and mine["good_dropped"] <= 0.1


def test_the_shipped_model_is_the_default_refiner():
    from prox_dagster.resources import RefinerResource

    path = default_model_path()
    assert path.is_file()
    refiner = build_refiner("classifier")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert refiner.version.startswith("classifier:") and refiner.model.sha256 == digest
    assert RefinerResource().backend == "classifier"
    assert RefinerResource().version == refiner.version


def test_a_retrained_model_is_another_refiner_version(sample_model, tmp_path):
    from prox_dagster.resources import ClassifierSettings, RefinerResource

    spec = json.loads(sample_model.read_text())
    spec["doc_threshold"] = spec["doc_threshold"] / 2  # another model, same format
    other = tmp_path / "other.json"
    other.write_text(json.dumps(spec))
    a = RefinerResource(classifier=ClassifierSettings(model=str(sample_model))).version
    b = RefinerResource(classifier=ClassifierSettings(model=str(other))).version
    assert a != b and a.startswith("classifier:sample@")

    from prox_dagster.definitions import build_definitions

    defs = build_definitions(data_dir=tmp_path / "data", refiner=RefinerResource(
        classifier=ClassifierSettings(model=str(other))))
    node = defs.resolve_assets_def("doc_refined_shard")
    assert b in node.code_versions_by_key[node.key]


@pytest.mark.parametrize("damage", ["missing", "truncated", "version", "not_a_model"])
def test_a_bad_model_file_fails_before_any_shard_is_touched(sample_model, tmp_path, damage):
    from prox_dagster.resources import ClassifierSettings, RefinerResource

    path = tmp_path / "model.json"
    text = sample_model.read_text()
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "version":
        path.write_text(json.dumps({**json.loads(text), "format_version": 99}))
    elif damage == "not_a_model":
        path.write_text(json.dumps({"hello": "world"}))
    expected = {"missing": "cannot be read", "truncated": "truncated or corrupt",
                "version": "format version 99", "not_a_model": "is not a"}[damage]
    with pytest.raises(ClassifierModelError, match=expected) as info:
        ClassifierModel(path)
    assert str(path) in str(info.value)

    # loading the code location is where it fails: before any run, any shard
    from prox_dagster.definitions import build_definitions

    data = tmp_path / "data"
    with pytest.raises(ClassifierModelError):
        build_definitions(data_dir=data, refiner=RefinerResource(
            classifier=ClassifierSettings(model=str(path))))
    assert not data.exists()


def test_a_corrupt_booster_is_a_model_error(sample_model, tmp_path):
    spec = json.loads(sample_model.read_text())
    spec["line_model"] = "tree\nversion=v4\nnum_class=oops"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(spec))
    model = ClassifierModel(path)  # read and checked; the boosters are parsed on first use
    with pytest.raises(ClassifierModelError, match="incomplete or corrupt"):
        model.line_probabilities(np.zeros((1, 3)))


def test_training_needs_good_and_bad_documents(tmp_path, sample_tokenizer):
    from prox_dagster.classifier_training import train_classifier

    rows = [{"id": str(i), "text": "Home | About\nA sentence that is long enough to be prose "
             "for the model here.\n© 2024", "line_labels": "BMB", "label": 1}
            for i in range(30)]
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="needs good and bad documents"):
        train_classifier([load_labelled_set(path)], sample_tokenizer, log=lambda _: None)


def test_shard_repetition_marks_a_line_common_to_many_documents(sample_model):
    refiner = ClassifierRefiner(sample_model)
    body = ("The committee met on Monday to review the annual budget and the plans for the "
            "new library building in the town centre.")
    docs = [f"Subscribe to our weekly newsletter today\n{body} {'x' * (i + 1)}."
            for i in range(40)]
    matrix_alone = refiner._line_probabilities([docs[0].split("\n")])[0][0]
    refiner.observe_shard(docs)
    matrix_shard = refiner._line_probabilities([docs[0].split("\n")])[0][0]
    from prox_dagster.refiners.line_features import FEATURE_NAMES

    col = FEATURE_NAMES.index("shard_doc_share")
    assert matrix_alone[0, col] == 0.0 and matrix_shard[0, col] == 1.0
    assert matrix_shard[1, col] == 0.0  # the body lines differ (digits aside) per document


def test_copies_of_one_page_do_not_make_its_lines_shard_boilerplate():
    """Lines held by three different pages are a template; a page crawled three times is one
    page (turku-line-quality holds two forum threads three times each)."""
    from prox_dagster.refiners.line_features import ShardLineCounts, line_key

    template = "Subscribe to our weekly newsletter today"
    page = f"{template}\nThe committee met on Monday to review the annual budget."
    others = [f"{template}\nA different story, number {'x' * i}." for i in range(1, 3)]
    counts = ShardLineCounts(text.split("\n") for text in [page, page, page, *others])
    template_others, body_others = counts.others([line_key(x) for x in page.split("\n")])
    assert counts.n_docs == 5
    assert template_others == 2  # the page and two other pages: copies are not counted
    assert body_others == 0
    assert ShardLineCounts(text.split("\n") for text in [page, *others]).others(
        [line_key(template)])[0] == 2


def test_the_shards_share_of_content_moves_the_line_threshold(sample_model, held_out_sample):
    """A shard that is mostly chrome needs more evidence to keep a line; one that is mostly
    text less. Too small a shard: the training sets' typical share."""
    from prox_dagster.evaluation import CONTENT_LABELS

    refiner = ClassifierRefiner(sample_model)
    assert refiner.prior == refiner.model.typical_prior  # before it sees a shard
    texts = [d.text for d in held_out_sample.documents]
    menu = "\n".join(["Home", "News", "Sport", "Contact us", "Privacy policy", "Log in",
                      "Subscribe", "Careers", "Advertise with us", "Terms of use"] * 3)
    text_only = ["\n".join(line for line, mark in zip(d.text.split("\n"), d.line_labels)
                           if mark in CONTENT_LABELS) for d in held_out_sample.documents]
    shares = {}
    for name, shard in (("text", text_only), ("page", texts),
                        ("chrome", [f"{menu}\n{t}\n{menu}" for t in texts])):
        refiner.observe_shard(iter(shard))  # a stream, as the pipeline passes it
        shares[name] = (refiner.prior, refiner.chunk_thresholds[0])
    assert shares["text"][0] > shares["page"][0] > shares["chrome"][0]
    assert shares["text"][1] < shares["page"][1] < shares["chrome"][1]
    refiner.observe_shard(texts[:1])
    assert refiner.prior == refiner.model.typical_prior


def test_repetition_drops_a_page_only_in_the_lines_its_chunks_would_keep(tmp_path,
                                                                          held_out_sample):
    """A page that carries its article again in metadata lines is dropped as repetitive when
    the chunk programs would keep those lines, and kept when they would remove them (a model
    whose chunk line threshold at the typical share is above them). The threshold is the
    model's: the shard does not move it."""
    import gzip

    from importlib import resources

    from prox_dagster.refiners.line_features import repeated_share

    paragraphs = json.loads(gzip.decompress(
        (resources.files("prox_dagster") / "data" / "sample_paragraphs.json.gz").read_bytes()))
    article = [text for _, text in paragraphs[10:18]]
    blob = " ".join(article)
    page = "\n".join(["Home | News | Sport | Contact", "",
                      *(line for text in article for line in (text, "")),
                      "Share on Facebook", "Tags: news, world", f"description: {blob}",
                      f"og:description: {blob}", "2019-11-13T23:06:00+01:00"])
    shipped = ClassifierRefiner()
    spec = json.loads(default_model_path().read_text())
    spec["operating_points"]["balanced"] = {"sentence_threshold": 0.64, "short_threshold": 0.64}
    (tmp_path / "strict.json").write_text(json.dumps(spec))
    strict = ClassifierRefiner(tmp_path / "strict.json")
    assert strict.version != shipped.version

    lines = page.split("\n")
    (_, indices, probs), = shipped._line_probabilities([lines])
    blob_p, article_p = probs[-3:-1], probs[1:-6]
    assert shipped.repetition_threshold < blob_p.min()
    assert blob_p.max() < strict.repetition_threshold
    assert (article_p >= strict.repetition_threshold).sum() >= len(article_p) // 2
    # the article three times over: two thirds of it repeats what came before
    assert repeated_share(lines, indices, probs, shipped.repetition_threshold) > 0.6
    assert repeated_share(lines, indices, probs, strict.repetition_threshold) < 0.1
    assert shipped.doc_programs([page])[0].startswith("drop_doc()  # classifier repeated")
    assert strict.doc_programs([page]) == ["keep_doc()"]
    before = strict.repetition_threshold
    strict.observe_shard([d.text for d in held_out_sample.documents])
    assert strict.chunk_thresholds[0] != before and strict.repetition_threshold == before


@pytest.mark.parametrize("flags, message", [
    (["--preset", "bold"], "preset must be one of precision, balanced, recall, not 'bold'"),
    (["--min-good-kept", "1.5"], "min_good_kept must be a share between 0 and 1, not 1.5"),
])
def test_train_refiner_refuses_a_trade_off_it_cannot_honour(sample_crawl, tmp_path, flags,
                                                            message):
    out = tmp_path / "model.json"
    proc = subprocess.run(
        [sys.executable, "-m", "prox_dagster.cli", "train-refiner",
         str(sample_crawl / "labels" / LABELLED_SET), "--out", str(out), *flags],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and message in " ".join(proc.stdout.split())
    assert not out.exists()


def test_every_preset_is_in_the_model_file_and_redone_from_its_training_record(sample_crawl,
                                                                              tmp_path):
    from prox_dagster.classifier_training import (PRESETS, TrainingSettings,
                                                           operating_point, train_classifier)
    from prox_dagster.tokenization import load_tokenizer

    write_sample_crawl(tmp_path, n_shards=2, docs_per_shard=20, seed=7)
    sets = [load_labelled_set(sample_crawl / "labels" / LABELLED_SET),
            load_labelled_set(tmp_path / "labels" / LABELLED_SET, name="other-crawl")]
    tokenizer, cache = load_tokenizer("sample"), {}

    def train(**settings):
        return json.loads(json.dumps(train_classifier(
            sets, tokenizer, TrainingSettings(**settings), name="two", log=lambda _: None,
            cache=cache)))

    default = train()
    tradeoff = default["training"]["threshold_tradeoff"]
    assert list(tradeoff["sets"]) == ["sample-crawl.labelled", "other-crawl"]
    for preset in PRESETS:
        point = operating_point(tradeoff, preset)
        assert default["operating_points"][preset] == {
            "sentence_threshold": point["sentence_threshold"],
            "short_threshold": point["short_threshold"]}
        assert default["training"]["operating_points"][preset] == point["out_of_fold"]
    # the presets order themselves: more content kept from precision to recall
    recall = {p: np.mean([s["keep_recall"] for s in
                          default["training"]["operating_points"][p].values()])
              for p in PRESETS}
    assert recall["precision"] <= recall["balanced"] <= recall["recall"]
    # the preset trained with is only the file's default: the models and points are the same
    precise = train(preset="precision")
    assert precise["preset"] == "precision"
    assert {k: v for k, v in precise.items() if k not in ("preset", "training")} == \
        {k: v for k, v in default.items() if k not in ("preset", "training")}
    # a set is held out by its name: two of one name cannot train
    with pytest.raises(ValueError, match="two training sets are named 'sample-crawl.labelled'"):
        train_classifier([sets[0], load_labelled_set(tmp_path / "labels" / LABELLED_SET)],
                         tokenizer, log=lambda _: None)


def test_the_document_threshold_has_the_best_f1_that_keeps_enough_good_documents():
    from prox_dagster.classifier_training import _doc_threshold

    # out-of-fold probabilities, best first: good good bad good bad bad good bad
    probs = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1, 0, 0, 1, 0])
    # keeping 3 of 4 good documents, 0.6 has the best F1 (6/8 against 0.3's 8/11)
    assert _doc_threshold(probs, labels, 0.75) == 0.6
    # all of them: the threshold goes down to the last good document, whatever its F1
    assert _doc_threshold(probs, labels, 1.0) == 0.3
    # documents of equal probability are kept or dropped together: 0.5 keeps two bad ones with
    # its good one (F1 4/7), so 0.1 (6/8) is best
    tied = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    assert _doc_threshold(tied, np.array([1, 1, 0, 0, 1]), 0.0) == 0.1


def _line_data(rows: list[tuple], set_names: list[str]):
    """LineData from (set, posterior, content, sentence, markup) rows; the naive filter keeps
    the sentences, as it does."""
    from prox_dagster.classifier_training import LineData
    from prox_dagster.refiners.line_features import FEATURE_NAMES

    matrix = np.zeros((len(rows), len(FEATURE_NAMES)), dtype=np.float32)
    matrix[:, FEATURE_NAMES.index("markup")] = [r[4] for r in rows]
    sentence = np.array([r[3] for r in rows], dtype=bool)
    return (np.array([r[1] for r in rows]),
            LineData(matrix, np.array([float(r[2]) for r in rows]), np.ones(len(rows)),
                     np.array([r[0] for r in rows]), np.zeros(len(rows), dtype=int), sentence,
                     sentence, np.array(["M" if r[2] else "B" for r in rows]), set_names))


def test_the_operating_point_keeps_every_sets_sentences_and_maximises_the_mean_gain():
    from prox_dagster.classifier_training import operating_point, threshold_tradeoff

    # set a: six content sentences (two the model doubts, at 0.2), four noise sentences at 0.1,
    # two markup sentences at 0.95 (removed whatever their probability), four short content
    # lines at 0.7 and eight short noise lines at 0.5
    a = ([(0, 0.9, 1, 1, 0)] * 4 + [(0, 0.2, 1, 1, 0)] * 2 + [(0, 0.1, 0, 1, 0)] * 4
         + [(0, 0.95, 0, 1, 1)] * 2 + [(0, 0.7, 1, 0, 0)] * 4 + [(0, 0.5, 0, 0, 0)] * 8)
    probs, data = _line_data(a, ["a"])
    point = operating_point(threshold_tradeoff(probs, data), "balanced")
    # 90% of the sentences: from 0.2 down; then every line kept is content, short ones from 0.52
    assert (point["sentence_threshold"], point["short_threshold"]) == (0.12, 0.52)
    naive_f1 = 2 * 6 / (12 + 10)  # the naive filter keeps every sentence, markup included
    assert point["out_of_fold"]["a"] == {"keep_recall": 1.0, "sentence_recall": 1.0,
                                         "gain_over_naive": round(1 - naive_f1, 4)}
    # set b: its short content sits under its short noise. No set decides alone: the pair
    # must gain 0.05 on both, so the short threshold that suits only a is out
    b = [(1, 0.9, 1, 1, 0)] * 4 + [(1, 0.5, 1, 0, 0)] * 4 + [(1, 0.7, 0, 0, 0)] * 4
    probs, data = _line_data(a + b, ["a", "b"])
    point = operating_point(threshold_tradeoff(probs, data), "balanced")
    assert point["sentence_threshold"] == 0.12 and point["short_threshold"] <= 0.5
    assert all(s["gain_over_naive"] >= 0.05 for s in point["out_of_fold"].values())
    # a sentence floor nothing but the lowest threshold reaches: the lowest
    c = [(0, 0.01, 1, 1, 0)] + [(0, 0.9, 1, 1, 0)] * 3 + [(0, 0.5, 0, 0, 0)] * 4
    probs, data = _line_data(c, ["c"])
    assert operating_point(threshold_tradeoff(probs, data), "recall")["sentence_threshold"] \
        == 0.02


def test_line_data_rows_carry_the_naive_and_sentence_flags_of_their_lines(tmp_path,
                                                                          sample_tokenizer):
    from prox_dagster.classifier_training import set_line_data
    from prox_dagster.words import sentence_like

    lines = ["Home | News", "", "市政府周二批准了新的预算方案。",
             "The council approved the new budget on Tuesday after a long debate.",
             "  • Apples and pears", "ignored line", "© 2024 Daily"]
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "\n".join(lines),
                                "line_labels": "B_MMM_B"}) + "\n")
    data = set_line_data(load_labelled_set(path), sample_tokenizer)
    scored = [lines[i] for i in (0, 2, 3, 4, 6)]  # blank and `_` lines are not rows
    assert data.labels.tolist() == [0, 1, 1, 1, 0]
    assert data.sentence.tolist() == [sentence_like(line, "cjk") for line in scored] == \
        [False, True, True, False, False]
    assert data.naive.tolist() == [False, False, True, False, False]
    assert data.kinds.tolist() == ["B", "M", "M", "M", "B"]
