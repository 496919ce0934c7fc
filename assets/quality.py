"""Refinement quality: the refiner scored on labelled pages, and the classifier refiner trained.

``refiner_evaluation`` runs the labelled sets through the pipeline's own stages with the refiner
this code location loads; its code version is that refiner's version, so a new refiner shows
the evaluation as stale and each version gets its own materialization, comparable over time
(the numeric metadata plots per materialization). ``classifier_model`` trains the ``classifier``
backend from the training sets and writes a model file to load with ``PROX_CLASSIFIER_MODEL``.
"""

import json
import re
import time
from pathlib import Path

import dagster as dg

from prox_dagster.evaluation import evaluate, evaluation_csv, evaluation_markdown
from prox_dagster.refiners.classifier_training import TrainingSettings, train_classifier, \
    write_model
from resources import LabelledSets, ProgramPolicy, RefinerResource, ShardStorage

from .common import location_value


def version_slug(version: str) -> str:
    """A refiner version as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", version)[:120]


def build_refiner_evaluation(code_version: str) -> dg.AssetsDefinition:
    @dg.asset(group_name="quality", kinds={"polars", "json", "csv"}, code_version=code_version)
    def refiner_evaluation(context: dg.AssetExecutionContext, refiner: RefinerResource,
                           policy: ProgramPolicy,
                           labelled_sets: LabelledSets,
                           storage: ShardStorage) -> dg.MaterializeResult:
        """The refiner this code location loads, scored on labelled pages through the same
        stage functions the shard assets call: line keep-precision / recall / F1 (recall also
        of the content lines that are sentences and of the short ones), noise-F1 and content
        lost to document drops; document keep-F1 and the shares of bad and good
        documents dropped; token retention and docs/s; beside the naive line filter. Saved as
        `evaluation/{refiner version}.json` and `.csv`."""
        sets = labelled_sets.load("evaluation")
        engine = refiner.get()
        evaluation = evaluate(
            sets, engine, refiner.chunk_tokenizer(), max_tokens=refiner.max_chunk_tokens,
            policy=policy.settings(),
            progress=lambda name, i, n: context.log.info(f"evaluating on {name} ({i}/{n})"))
        for entry in evaluation.sets:
            for skipped in entry["skipped"]:
                context.log.warning(f"{entry['set']}: {skipped['id']}: {skipped['reason']}")
        slug = version_slug(evaluation.refiner_version)
        store = storage.store
        json_path = store.write_text(json.dumps(evaluation.to_json(), indent=1), "evaluation",
                                     f"{slug}.json")
        store.write_text(evaluation_csv(evaluation), "evaluation", f"{slug}.csv")
        overall = evaluation.overall["refiner"]
        naive = evaluation.overall["naive_filter"]
        numbers = {f"overall_{key}": value for key, value in overall.items()
                   if isinstance(value, float)}
        per_set = {f"keep_f1/{entry['set']}": entry["refiner"]["keep_f1"]
                   for entry in evaluation.sets if entry["refiner"]["keep_f1"] is not None}
        return dg.MaterializeResult(metadata={
            "refiner_version": evaluation.refiner_version,
            "refiner_backend": evaluation.refiner_backend,
            "sets": ", ".join(entry["set"] for entry in evaluation.sets),
            "documents": sum(entry["docs"] for entry in evaluation.sets),
            "skipped_documents": sum(len(entry["skipped"]) for entry in evaluation.sets),
            **numbers,
            "naive_keep_f1": naive["keep_f1"] if naive["keep_f1"] is not None else 0.0,
            **per_set,
            "report": dg.MetadataValue.md(evaluation_markdown(evaluation)),
            "json": location_value(json_path),
            "duration_s": evaluation.seconds,
        })

    return refiner_evaluation


_DEFAULTS = TrainingSettings()


class ClassifierTrainingConfig(dg.Config):
    """How the thresholds trade content kept for noise removed, each measured out of fold on
    the training sets. `min_keep_recall`: every line-labelled set keeps at least this share of
    its content lines (0: no floor), before `min_gain_over_naive`: the chunk threshold is the
    lowest at which every set gains this much keep-F1 over the naive line filter.
    `min_good_kept`: the document threshold keeps at least this share of the good documents."""

    min_keep_recall: float = _DEFAULTS.min_keep_recall
    min_gain_over_naive: float = _DEFAULTS.min_gain_over_naive
    min_good_kept: float = _DEFAULTS.min_good_kept


def tradeoff_markdown(tradeoff: dict | None, chosen: float) -> str:
    """Each training set's out-of-fold keep-recall and gain over the naive filter at the chosen
    chunk threshold and at a few others, so an operator sees what the threshold traded."""
    if tradeoff is None:
        return "One training set: no set was held out, so nothing was measured out of fold."
    thresholds = tradeoff["thresholds"]
    # the model file keeps the threshold rounded: its column is the nearest candidate
    at = min(range(len(thresholds)), key=lambda i: abs(thresholds[i] - chosen))
    columns = sorted({at, *(i for i, t in enumerate(thresholds)
                            if round(t, 2) in (0.06, 0.1, 0.2, 0.3, 0.5))})
    header = (f"**{thresholds[i]:.2f} (chosen)**" if i == at else f"{thresholds[i]:.2f}"
              for i in columns)
    rows = ["| set: keep-recall / gain over naive at threshold | " + " | ".join(header) + " |",
            "|---|" + "---|" * len(columns)]
    for name, scores in tradeoff["sets"].items():
        rows.append(f"| {name} | " + " | ".join(
            f"{scores['keep_recall'][i]:.3f} / {scores['gain_over_naive'][i]:+.3f}"
            for i in columns) + " |")
    return "\n".join(rows)


@dg.asset(group_name="quality", kinds={"lightgbm", "json"})
def classifier_model(context: dg.AssetExecutionContext, config: ClassifierTrainingConfig,
                     labelled_sets: LabelledSets,
                     refiner: RefinerResource) -> dg.MaterializeResult:
    """The `classifier` refiner's line, document and share models, trained on the training sets
    and written (LightGBM text inside JSON: loading it runs no code) to
    `{model_dir}/classifier-{sha256[:12]}.json`. Load it with `PROX_CLASSIFIER_MODEL=<path>`:
    its sha256 is part of the refiner version, so exactly the shards refined by another model
    show as stale."""
    started = time.perf_counter()
    # a share out of range fails here, before the sets are read
    settings = TrainingSettings(max_tokens=refiner.max_chunk_tokens,
                                min_keep_recall=config.min_keep_recall,
                                min_gain_over_naive=config.min_gain_over_naive,
                                min_good_kept=config.min_good_kept)
    sets = labelled_sets.load("training")
    # chunked as the classifier refiner will see its pages: with the refiner's tokenizer
    spec = train_classifier(sets, refiner.chunk_tokenizer(), settings, log=context.log.info)
    folder = Path(labelled_sets.model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / ".classifier-training.json"
    digest = write_model(spec, staging)
    path = folder / f"classifier-{digest[:12]}.json"
    staging.replace(path)
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)),
        "sha256": digest,
        "use_with": f"PROX_REFINER_BACKEND=classifier PROX_CLASSIFIER_MODEL={path}",
        "training_sets": ", ".join(s.name for s in sets),
        "line_rows": spec["training"]["line_rows"],
        "doc_rows": spec["training"]["doc_rows"],
        "line_threshold": spec["line_threshold"],
        "content_threshold": spec["content_threshold"],
        "min_keep_recall": settings.min_keep_recall,
        "min_gain_over_naive": settings.min_gain_over_naive,
        # what the chunk threshold traded on each training set, measured without the set
        "threshold_tradeoff": dg.MetadataValue.md(tradeoff_markdown(
            spec["training"]["threshold_tradeoff"], spec["content_threshold"])),
        "typical_prior": spec["typical_prior"],
        # how far to trust the chunk threshold: each set's share of content lines as the share
        # model estimates it without having seen the set, beside its labels' share
        "content_shares": dg.MetadataValue.md(
            "| set | estimated share of content lines | labelled share |\n|---|---|---|\n"
            + "\n".join(f"| {c['set']} | {c['estimated']:.3f} | {c['labelled']:.3f} |"
                        for c in spec["training"]["content_shares"])
            + ("" if len(sets) > 1 else "\n\nOne training set: its estimate comes from the "
               "model trained on it, which says nothing of a new shard.")),
        "doc_threshold": spec["doc_threshold"],
        "duration_s": round(time.perf_counter() - started, 3),
    })
