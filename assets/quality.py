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
from prox_dagster.classifier_training import TrainingSettings, train_classifier, \
    write_model
from prox_dagster.resources import LabelledSets, ProgramPolicy, RefinerResource, ShardStorage

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
    """How the chunk thresholds trade content kept for noise removed, measured out of fold on
    the training sets: `preset` is the operating point the model file defaults to (`precision`,
    `balanced` or `recall`; the file holds all three). `min_good_kept`: the document threshold
    keeps at least this share of the good documents."""

    preset: str = _DEFAULTS.preset
    min_good_kept: float = _DEFAULTS.min_good_kept


def operating_points_markdown(spec: dict) -> str:
    """Each preset's thresholds, and what they do to each training set measured without it
    (sentence recall / keep-F1 gain over the naive filter), the model's default marked."""
    points = spec["operating_points"]
    measured = spec["training"].get("operating_points") or {}
    sets = list(next(iter(measured.values()), None) or {})
    header = ["preset", "sentences from", "short lines from", *sets]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for preset, point in points.items():
        name = f"**{preset} (default)**" if preset == spec["preset"] else preset
        rows.append(f"| {name} | {point['sentence_threshold']:.2f} | "
                    f"{point['short_threshold']:.2f} | " + " | ".join(
                        f"{measured[preset][s]['sentence_recall']:.3f} / "
                        f"{measured[preset][s]['gain_over_naive']:+.3f}" for s in sets) + " |")
    note = ("Per set: sentence recall / keep-F1 gain over the naive filter, out of fold."
            if sets else "One training set: no set was held out, so nothing was measured out "
            "of fold.")
    return "\n".join(rows) + "\n\n" + note


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
    settings = TrainingSettings(max_tokens=refiner.max_chunk_tokens, preset=config.preset,
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
        "preset": spec["preset"],
        "kinds": ", ".join(spec["kinds"]),
        # what each preset's thresholds trade on each training set, measured without the set
        "operating_points": dg.MetadataValue.md(operating_points_markdown(spec)),
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
