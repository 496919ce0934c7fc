"""The ``prox-dagster`` command line: ``demo`` (the main job on the sample crawl in a real Dagster
instance), ``sample``, ``audit``, ``eval``, ``train-refiner`` and ``ablate``.

It sits above the composition root (``prox_dagster.definitions``), which it imports only once
``DAGSTER_HOME`` is set.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import orjson
from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from . import environment
from .atomic_writes import write_text_atomic
from .chunking import DEFAULT_MAX_TOKENS
from .lineage import audit_csv
from .sample import write_sample_crawl
from .shards import conflict_error, find_raw_shards

REPO_ROOT = Path(__file__).resolve().parent.parent


def _prepare_home(home: Path, console: Console) -> None:
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    source = REPO_ROOT / "dagster.yaml"
    if not target.exists():
        if source.is_file():
            shutil.copyfile(source, target)
        else:
            console.print(f"[yellow]no dagster.yaml beside the package; {home} uses "
                          "defaults")
    environment.assign("DAGSTER_HOME", str(home))


def cmd_sample(args: argparse.Namespace) -> int:
    paths = write_sample_crawl(args.out, n_shards=args.shards, docs_per_shard=args.docs,
                               seed=args.seed)
    for path in paths:
        print(path)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 132)
    data = Path(args.data_dir).resolve()
    if data.exists() and not data.is_dir():
        console.print(f"[red]--data-dir {str(data)!r} is not a folder")
        return 2
    raw = data / "raw"
    if not find_raw_shards(raw)[0]:
        paths = write_sample_crawl(data, n_shards=args.shards, docs_per_shard=args.docs,
                                   seed=args.seed)
        console.print(f"wrote the sample crawl: {len(paths)} shards in {raw} "
                      f"(labels in {data / 'labels'})")
    _prepare_home(Path(args.dagster_home).resolve(), console)

    from . import definitions  # imports Dagster: only once DAGSTER_HOME is set

    defs = definitions.build_definitions(data_dir=data, raw_dir=raw)
    instance = definitions.current_instance()
    new = definitions.register_new_shards(defs, instance)
    console.print(f"Dagster instance {environment.value('DAGSTER_HOME')}: "
                  f"{len(new)} new partitions from the raw-shard sensor")
    shards, conflicts = find_raw_shards(raw)
    for key, names in sorted(conflicts.items()):
        console.print(f"[red]{conflict_error(key, names, str(raw))}")
    shards = sorted(shards)
    rows, failed = [], []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("refining shards", total=len(shards))
        for shard in shards:
            result = definitions.materialize_shard(defs, instance, shard)
            checks = result.get_asset_check_evaluations()
            passed = sum(c.passed for c in checks)
            if not result.success or passed < len(checks):
                failed.append(shard)
            rows.append(_summary_row(instance, definitions, shard, passed, len(checks)))
            progress.advance(task)
    manifest = definitions.materialize_pretraining_set(defs, instance)
    console.print(_summary_table(rows, console.width))
    meta = definitions.latest_metadata(instance, "pretraining_set")
    console.print(f"pre-training set: {meta.get('total_documents', 0)} documents, "
                  f"{meta.get('total_tokens', 0)} tokens in {meta.get('shards', 0)} shards -> "
                  f"{meta.get('manifest', '?')}")
    console.print(f"See it in the UI: DAGSTER_HOME={environment.value('DAGSTER_HOME')} "
                  f"PROX_DATA_DIR={data} dagster dev   (or: make dev)")
    if failed or not manifest.success:
        console.print(f"[red]failed shards: {failed or 'pretraining_set'}")
        return 1
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 200)
    home = Path(args.dagster_home).resolve()
    if not home.is_dir():
        console.print(f"[red]no Dagster instance at {home}; run `prox-dagster demo` or point "
                      "--dagster-home (or DAGSTER_HOME) at yours")
        return 2
    environment.assign("DAGSTER_HOME", str(home))

    from . import definitions

    defs = definitions.build_definitions()
    rows = definitions.lineage_report(defs, definitions.current_instance(),
                                      refiner_version=args.refiner_version, model=args.model,
                                      status=args.status, verify=args.verify)
    if args.format == "json":
        # 10⁵ rows: orjson writes them in a fraction of json's time
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif args.format == "csv":
        sys.stdout.write(audit_csv(rows))
    else:
        table = Table(title=f"lineage audit: {len(rows)} shards "
                            f"(current refiner {defs.resources['refiner'].resolved().version})")
        # the table keeps what fits a terminal; JSON and CSV have every column
        shown = ["shard", "status", "reason", "doc_refiner_version", "doc_refined_at",
                 "checks_passed", "failed_checks"]
        for name in shown:
            table.add_column(name.replace("_", " "), no_wrap=name == "shard",
                             overflow="fold")
        for row in rows:
            table.add_row(*("-" if row[c] is None else str(row[c]) for c in shown))
        console.print(table)
    return 0


def _load_sets(paths: list[str], console: Console):
    from .evaluation import EvaluationError, load_labelled_set

    sets = []
    for path in paths:
        try:
            sets.append(load_labelled_set(path))
        except EvaluationError as exc:
            console.print(f"[red]{exc}")
            return None
        for skipped in sets[-1].skipped:
            console.print(f"[yellow]{sets[-1].name}: {skipped['id']}: {skipped['reason']}")
        for note in sets[-1].notes:
            console.print(f"[yellow]{sets[-1].name}: {note}")
    return sets


def cmd_eval(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 200, stderr=args.format != "table")
    sets = _load_sets(args.sets, console)
    if sets is None:
        return 2
    if args.backend:
        environment.assign("PROX_REFINER_BACKEND", args.backend)
    if args.model:
        environment.assign("PROX_CLASSIFIER_MODEL", args.model)

    from .evaluation import evaluate, evaluation_csv
    from .refiners.classifier import ClassifierModelError

    # the refiner, tokenizer and policy the code location loads (same settings, same code;
    # importing the composition root loads them, and a bad model file fails right there)
    try:
        from . import definitions

        defs = definitions.build_definitions()
    except ClassifierModelError as exc:
        console.print(f"[red]{exc}")
        return 2
    resources = defs.resources
    refiner = resources["refiner"].resolved()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("evaluating", total=len(sets))

        def step(name: str, position: int, total: int) -> None:
            progress.update(task, completed=position - 1, description=f"evaluating on {name}")

        evaluation = evaluate(sets, refiner.get(), refiner.chunk_tokenizer(),
                              max_tokens=refiner.max_chunk_tokens,
                              policy=resources["policy"].settings(), progress=step)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(json.dumps(evaluation.to_json(), indent=1), out / "evaluation.json")
        write_text_atomic(evaluation_csv(evaluation), out / "evaluation.csv")
    if args.format == "json":
        print(json.dumps(evaluation.to_json(), indent=1))
    elif args.format == "csv":
        sys.stdout.write(evaluation_csv(evaluation))
    else:
        console.print(f"refiner {evaluation.refiner_version} on {len(evaluation.sets)} labelled "
                      f"sets ({evaluation.seconds:.1f}s)")
        for table in _evaluation_tables(evaluation, console.width):
            console.print(table)
    return 0


def _evaluation_tables(evaluation, room: int) -> list[Table]:
    from .evaluation import evaluation_tables

    return [_fitted_table(f"{title}: {what}", headers, rows, left=2, room=room)
            for title, what, headers, rows in evaluation_tables(evaluation)]


def cmd_train_refiner(args: argparse.Namespace) -> int:
    from .refiners.classifier import ClassifierModel
    from .classifier_training import TrainingSettings, train_classifier, write_model
    from .tokenization import load_tokenizer

    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        settings = TrainingSettings(max_tokens=args.max_tokens, preset=args.preset,
                                    min_good_kept=args.min_good_kept)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    sets = _load_sets(args.sets, console)
    if sets is None:
        return 2
    tokenizer = load_tokenizer(args.tokenizer)
    try:
        with console.status("training the classifier refiner"):
            spec = train_classifier(sets, tokenizer, settings, name=args.name,
                                    log=console.print)
    except ValueError as exc:  # what the sets cannot train (no labels of a kind, too few sets)
        console.print(f"[red]cannot train on {', '.join(s.name for s in sets)}: {exc}[/red]")
        return 2
    digest = write_model(spec, args.out)
    model = ClassifierModel(args.out)  # what the refiner will load, read back once
    sentence, short = model.operating_points[model.preset]
    console.print(f"wrote {args.out} (sha256 {digest[:12]}, model {model.name}, preset "
                  f"{model.preset}: sentences from {sentence:.2f}, short lines from "
                  f"{short:.2f}; line threshold {model.line_threshold:.2f}, doc threshold "
                  f"{model.doc_threshold:.3f}; kinds {', '.join(model.kinds)})")
    console.print(f"use it: PROX_REFINER_BACKEND=classifier PROX_CLASSIFIER_MODEL={args.out}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from .ablation import AblationError, load_config, run_ablation
    from .ablation_pages import (gold_texts, jsonl_arm, page_arms, parse_arm, read_pages,
                                 split_pages)
    from .ablation_report import ablation_markdown, ablation_table, svg_plot
    from .refiners.classifier import ClassifierModelError
    from .tokenization import load_tokenizer

    console = Console(width=None if sys.stdout.isatty() else 200)
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
        config = load_config(args.config, seeds=seeds)
        pages = [page for path in args.sets for page in read_pages(path)]
        if args.validation:
            train = pages
            validation = [text for path in args.validation for text in gold_texts(path)]
        else:
            train, validation = split_pages(pages, args.holdout)
        extra = [parse_arm(spec) for spec in args.arm or []]
        from . import definitions

        resources = definitions.build_definitions().resources
    except (AblationError, ClassifierModelError, ValueError) as exc:
        console.print(f"[red]{exc}")
        return 2
    refiner = resources["refiner"].resolved()
    tokenizer = load_tokenizer(args.tokenizer)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="prox-ablation-") as work:
        try:
            with console.status("building the arms") as status:
                arms = page_arms(train, work, tokenizer, refiner.get(), refiner.chunk_tokenizer(),
                                 max_tokens=refiner.max_chunk_tokens,
                                 policy=resources["policy"].settings(), fmt=args.format,
                                 log=lambda m: status.update(m))
                arms += [jsonl_arm(name, path, work, tokenizer, fmt=args.format)
                         for name, path in extra]
            with console.status("training") as status:
                result = run_ablation(arms, validation, tokenizer, config,
                                      tokenizer_label=args.tokenizer,
                                      log=lambda m: status.update(m))
        except AblationError as exc:
            console.print(f"[red]{exc}")
            return 2
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(result.to_json(), indent=1), out / "ablation.json")
    write_text_atomic(svg_plot(result.to_json()), out / "ablation.svg")
    write_text_atomic(ablation_markdown(result.to_json(), "ablation.svg"), out / "ablation.md")
    title, headers, rows = ablation_table(result.to_json())
    console.print(_fitted_table(title, headers, rows, left=2, room=console.width))
    for verdict in result.to_json()["verdicts"]:
        if verdict["beats"]:
            console.print(f"{verdict['a']} beats {verdict['b']} (loss lower by "
                          f"{verdict['gap']:.4f} > 2 × pooled std {verdict['pooled_std']:.4f})")
    console.print(f"wrote ablation.json, ablation.md and ablation.svg in {out}")
    return 0


def _summary_row(instance, definitions, shard: str, passed: int, total: int) -> list[str]:
    raw = definitions.latest_metadata(instance, "raw_shard", shard)
    docs = definitions.latest_metadata(instance, "doc_refined_shard", shard)
    chunks = definitions.latest_metadata(instance, "chunk_refined_shard", shard)
    clean = definitions.latest_metadata(instance, "clean_shard", shard)
    return [
        shard,
        str(raw.get("documents", "-")),
        str(raw.get("quarantined", "-")),
        str(clean.get("docs_kept", "-")),
        str(clean.get("tokens_in", "-")),
        str(clean.get("tokens_out", "-")),
        f"{clean.get('token_retention', 0):.2f}" if clean else "-",
        f"{docs.get('parse_rate', 0):.2f}" if docs else "-",
        f"{chunks.get('parse_rate', 0):.2f}" if chunks else "-",
        f"{passed}/{total}",
    ]


def _summary_table(rows: list[list[str]], room: int) -> Table:
    return _fitted_table("prox-dagster demo: one row per shard",
                         ["shard", "docs in", "quarantined", "docs kept", "tokens in",
                          "tokens out", "retention", "doc parse", "chunk parse", "checks"],
                         rows, left=1, room=room)


def _fitted_table(title: str, headers: list[str], rows: list[list[str]], *, left: int,
                  room: int) -> Table:
    """A table that fits ``room`` columns (80 or more) without cutting a number: every column as
    wide as its widest value and header, or where that does not fit, as its widest value or
    header word (a header wraps between its words) with the first ``left`` columns (names)
    folded when there is still no room."""
    def widest(i: int, header_parts: list[str]) -> int:
        return max([len(row[i]) for row in rows] + [len(part) for part in header_parts])

    full = [widest(i, [header]) for i, header in enumerate(headers)]
    # the box draws one character between columns and one at either edge
    fits = sum(full) + len(full) + 1 <= room
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=0,
                  pad_edge=False)
    for i, header in enumerate(headers):
        width = full[i] if fits else widest(i, header.split())
        if i < left:
            table.add_column(header, overflow="fold", min_width=width if fits else min(width, 12))
        else:
            table.add_column(header, justify="right", width=width)
    for row in rows:
        table.add_row(*row)
    return table


def main(argv: list[str] | None = None) -> int:
    from .classifier_training import TrainingSettings

    parser = argparse.ArgumentParser(prog="prox-dagster", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the whole graph on the sample crawl")
    demo.add_argument("--data-dir", default=environment.value("PROX_DATA_DIR"))
    demo.add_argument("--dagster-home",
                      default=environment.value("DAGSTER_HOME") or ".dagster_home")
    sample = sub.add_parser("sample", help="write the sample crawl")
    sample.add_argument("--out", default=".prox_data")
    audit = sub.add_parser("audit", help="which refiner produced every shard, from the Dagster "
                                         "instance; filter by refiner version, model, status")
    audit.add_argument("--dagster-home",
                       default=environment.value("DAGSTER_HOME") or ".dagster_home")
    audit.add_argument("--refiner-version", help="only shards this refiner version refined")
    audit.add_argument("--model", help="only shards this model (id or path) refined")
    audit.add_argument("--status", choices=["current", "stale", "missing", "failed", "running"])
    audit.add_argument("--format", choices=["table", "json", "csv"], default="table")
    audit.add_argument("--verify", action="store_true",
                       help="judge every shard again from its sidecars and check every file "
                            "they list (else only what changed since the last audit)")
    evaluate = sub.add_parser("eval", help="score the refiner the code location loads on "
                                           "labelled sets, beside the naive line filter")
    evaluate.add_argument("sets", nargs="+", help="labelled JSONL files or folders with docs.jsonl")
    evaluate.add_argument("--backend", help="refiner backend (default: PROX_REFINER_BACKEND)")
    evaluate.add_argument("--model", help="classifier model file (default: PROX_CLASSIFIER_MODEL)")
    evaluate.add_argument("--format", choices=["table", "json", "csv"], default="table")
    evaluate.add_argument("--out", help="also write evaluation.json and evaluation.csv here")
    train = sub.add_parser("train-refiner", help="train the classifier refiner on labelled sets")
    train.add_argument("sets", nargs="+", help="labelled JSONL files or folders with docs.jsonl")
    train.add_argument("--out", required=True, help="model file to write (JSON)")
    train.add_argument("--name", help="model name (default: from the sets)")
    train.add_argument("--tokenizer",
                       default=environment.value("PROX_REFINER_TOKENIZER") or "sample",
                       help="the refiner's tokenizer, which counts chunk budgets "
                            "(PROX_REFINER_TOKENIZER)")
    train.add_argument("--max-tokens", type=int,
                       default=environment.integer("PROX_MAX_CHUNK_TOKENS", DEFAULT_MAX_TOKENS))
    defaults = TrainingSettings()
    train.add_argument("--preset", default=defaults.preset,
                       help="the operating point the model file defaults to: precision, "
                            "balanced or recall (all three are in the file; the resource's "
                            "preset picks another) (default %(default)s)")
    train.add_argument("--min-good-kept", type=float, default=defaults.min_good_kept,
                       help="the document threshold keeps at least this share of the good "
                            "documents, out of fold (default %(default)s)")
    ablate = sub.add_parser("ablate", help="train the same small LM on the raw, naive and "
                                           "refined text of the same pages; compare held-out loss")
    ablate.add_argument("sets", nargs="+", help="JSONL files or folders with docs.jsonl: the "
                                                "pages every arm is built from")
    ablate.add_argument("--validation", nargs="*", help="JSONL of held-out clean texts "
                        "(clean_text, labelled content lines, or text); default: the gold text "
                        "of the pages held out by --holdout")
    ablate.add_argument("--holdout", type=float, default=0.2,
                        help="share of the pages with gold text held out (default %(default)s)")
    ablate.add_argument("--config", default="cpu", help="tiny, cpu, gpu, or a JSON file of "
                        "TrainConfig fields (default %(default)s)")
    ablate.add_argument("--seeds", help="comma-separated seeds, at least 3 (default: the config's)")
    ablate.add_argument("--tokenizer", default=environment.value("PROX_TOKENIZER"),
                        help="the pre-training tokenizer (PROX_TOKENIZER)")
    ablate.add_argument("--arm", action="append", metavar="NAME=JSONL",
                        help="a further arm: a JSONL of documents with 'text', in the pages' "
                             "order (another refiner's output); repeatable")
    ablate.add_argument("--format", choices=["megatron", "litgpt"], default="megatron",
                        help="the arms' token files, read by megatron-core or by litdata "
                             "(litgpt) (default %(default)s)")
    ablate.add_argument("--out", default="ablation", help="folder for ablation.json and .md")
    for p in (demo, sample):
        p.add_argument("--shards", type=int, default=4)
        p.add_argument("--docs", type=int, default=30, help="documents per shard")
        p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return {"demo": cmd_demo, "sample": cmd_sample, "audit": cmd_audit, "eval": cmd_eval,
            "train-refiner": cmd_train_refiner, "ablate": cmd_ablate}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
