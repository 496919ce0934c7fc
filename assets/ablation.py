"""Does refining make a better model? The same small LM trained on the raw, naive-filtered and
refined text of the pre-training set's shards, scored on held-out clean text
(``prox_dagster.ablation``)."""

import hashlib
import json
import tempfile
from pathlib import Path

import dagster as dg

from prox_dagster.ablation import AblationError, Arm, load_config, run_ablation, text_arm
from prox_dagster.ablation_pages import gold_texts, jsonl_arm, parse_arm
from prox_dagster.ablation_report import ablation_markdown, svg_data_uri, svg_plot
from prox_dagster.evaluation import naive_text
from prox_dagster.pretraining import load_manifest
from prox_dagster.store import exists, filesystem, is_remote
from prox_dagster.token_files import iter_kept_texts
from prox_dagster.resources import LabelledSets, ProgramPolicy, ShardStorage, TokenizerResource

from .common import location_value
from .quality import version_slug


class AblationConfig(dg.Config):
    """``config``: ``tiny``, ``cpu`` (all arms in minutes on 2 cores), ``gpu``, or a JSON file
    of ``TrainConfig`` fields. ``seeds``: at least 3 (empty: the config's). ``validation``:
    JSONL files of held-out clean text (empty: the labelled_sets resource's ``ablation`` sets,
    ``PROX_ABLATION_SETS``). ``arms``: further arms, ``NAME=PATH`` of a JSONL file of documents
    with ``text`` in the raw shards' order (another refiner's output, an older set's text)."""

    config: str = "cpu"
    seeds: list[int] = []
    validation: list[str] = []
    arms: list[str] = []


def _local(location: str, work: Path) -> str:
    """A token file or folder as a local path: itself, or a download into ``work``."""
    if not is_remote(location):
        return location
    fs, path = filesystem(location)
    local = work / "refined-set" / location.rstrip("/").rsplit("/", 1)[-1]
    local.parent.mkdir(parents=True, exist_ok=True)
    fs.get(path, str(local), recursive=fs.isdir(path))
    return str(local)


def _reader_format(manifest: dict) -> str:
    """The format the arms train from: the set's own, when a trainer's library reads it."""
    if manifest.get("formats") == ["litgpt"] and (manifest.get("packed") or {}).get("litdata"):
        return "litgpt"
    return "megatron"


def _refined_arm(store, manifest: dict, tokenizer, work: Path, fmt: str, log) -> Arm:
    """The pre-training set as the refined arm: its own files when it is in a format a
    trainer's library reads (Megatron files; litgpt's litdata chunks), else the kept documents
    of the clean shards it lists, tokenized by the same writer and checked token for token
    against the manifest."""
    shards = manifest["shards"]
    versions = sorted({v for s in shards for v in s.get("refiner_versions", [])})
    source = ", ".join(versions) or "unknown refiner"
    texts = []
    for entry in shards:
        with store.open(store.path("clean_shard", entry["shard"])) as handle:
            for _, batch in iter_kept_texts(handle, 1024):
                texts.extend(batch)
    documents = sum(s["documents"] for s in shards)
    listed = sum(s["tokens"] for s in shards)
    if manifest.get("formats") == ["megatron"]:
        prefixes = []
        for entry in shards:
            for record in entry["files"]:
                if record["file"].endswith(".idx"):
                    prefix = record["file"].removesuffix(".idx")
                    _local(prefix + ".idx", work)
                    prefixes.append(_local(prefix + ".bin", work).removesuffix(".bin"))
        return Arm("refined", prefixes, documents, listed, source, texts, "megatron")
    if fmt == "litgpt":
        folder = manifest["packed"]["folder"]
        return Arm("refined", [_local(folder, work)], documents, manifest["packed"]["tokens"],
                   source, texts, "litgpt")
    log(f"the set's {', '.join(manifest.get('formats', []))} files are read by no trainer's "
        "library: its documents are tokenized again into Megatron files")
    arm = text_arm("refined", ((str(i), t) for i, t in enumerate(texts)), work, tokenizer,
                   source)
    if arm.tokens != listed:
        raise AblationError(
            f"the clean shards the pre-training set lists tokenize to {arm.tokens} tokens, the "
            f"manifest lists {listed} (its duplicates dropped, or shards changed since): "
            "rebuild the set, or write it in the megatron format to ablate its own files")
    return arm


def ablation_version(expected: dict) -> str:
    """The refiner version, then a digest of every shard stage's code version: what makes the
    arms (the refiner, the policy, the chunk and token settings). A code location loading
    another refiner shows the ablation stale, and each version gets its own materialization."""
    stages = sorted(expected)
    digest = hashlib.sha256("|".join(expected[s].code_version for s in stages).encode())
    refiner = expected["doc_refined_shard"].code_version.split("|", 1)[0]
    return f"{refiner}|ablation@{digest.hexdigest()[:12]}"


def build_ablation(expected: dict) -> dg.AssetsDefinition:
    return dg.asset(deps=["pretraining_set"], group_name="quality", kinds={"pytorch", "json"},
                    code_version=ablation_version(expected))(ablation)


def ablation(context: dg.AssetExecutionContext, config: AblationConfig,
             storage: ShardStorage, tokenizer: TokenizerResource, policy: ProgramPolicy,
             labelled_sets: LabelledSets) -> dg.MaterializeResult:
    """The same small Llama trained from scratch, with the same seeds and the same token
    budget, on three arms built from the pre-training set's shards: `raw` (their raw text),
    `naive` (the naive line filter's output) and `refined` (the set itself), and any further
    arms the run config names (`arms`: NAME=PATH of a JSONL of documents). Each arm's token
    files are read for training by the trainers' own libraries: megatron-core's
    `IndexedDataset` (a Megatron set, or a parquet set tokenized again), litdata's
    `StreamingDataset` (a litgpt set's litdata chunks). Reported: validation
    loss and bits per byte (mean ± std over the seeds) on held-out clean text deduplicated
    against every arm, the loss curves, and which arm beats which (a gap over 2× the pooled
    std). Saved as `ablation/{refiner version}.json` and `.svg`."""
    store = storage.store
    manifest_path = store.location("pretraining_set", "manifest.json")
    if not exists(manifest_path):
        raise dg.Failure("no pre-training set: materialize pretraining_set first")
    manifest = load_manifest(store, manifest_path)
    if not manifest["shards"]:
        raise dg.Failure("the pre-training set lists no shards: nothing to train on")
    try:
        train_config = load_config(config.config, seeds=tuple(config.seeds) or None)
        paths = config.validation or labelled_sets.ablation
        validation = [text for path in paths for text in gold_texts(path)]
        if not validation:
            raise AblationError(f"no clean text in the validation sets {paths}: name JSONL "
                                "files with clean_text, labelled lines or text")
        loaded = tokenizer.get()
        with tempfile.TemporaryDirectory(prefix="prox-ablation-") as work:
            raw, naive, settings = [], [], policy.settings()
            for entry in manifest["shards"]:
                frame = store.read("raw_shard", entry["shard"], ["id", "text"])
                for doc_id, text in zip(frame["id"], frame["text"]):
                    raw.append((doc_id, text))
                    naive.append((doc_id, naive_text(text or "", settings)))
            fmt = _reader_format(manifest)
            chunk = {"chunk_size": manifest["packed"]["chunk_size"]} if fmt == "litgpt" else {}
            arms = [text_arm("raw", raw, work, loaded, "raw text", fmt=fmt, **chunk),
                    _refined_arm(store, manifest, loaded, Path(work), fmt, context.log.info),
                    text_arm("naive", naive, work, loaded, "naive line filter", fmt=fmt,
                             **chunk)]
            arms += [jsonl_arm(*parse_arm(spec), work, loaded, fmt=fmt, **chunk)
                     for spec in config.arms]
            context.log.info(f"arms, read as {fmt} files: " + "; ".join(
                f"{a.name}: {a.documents} documents, {a.tokens} tokens ({a.source})"
                for a in arms))
            result = run_ablation(arms, validation, loaded, train_config,
                                  tokenizer_label=tokenizer.name_or_path, log=context.log.info)
    except AblationError as exc:
        raise dg.Failure(str(exc)) from exc
    report = result.to_json()
    refined = next(a for a in report["arms"] if a["name"] == "refined")
    slug = version_slug(refined["source"])
    json_path = store.write_text(json.dumps(report, indent=1), "ablation", f"{slug}.json")
    svg_path = store.write_text(svg_plot(report), "ablation", f"{slug}.svg")
    beats = [f"{v['a']} beats {v['b']}" for v in report["verdicts"] if v["beats"]]
    return dg.MaterializeResult(metadata={
        "refiner_version": refined["source"],
        "config": train_config.name,
        "device": result.device,
        "train_tokens_per_arm": train_config.train_tokens,
        "read_as": fmt,
        **{f"val_loss/{a['name']}": a["val_loss_mean"] for a in report["arms"]},
        **{f"bits_per_byte/{a['name']}": a["bits_per_byte_mean"] for a in report["arms"]},
        **{f"tokens/{a['name']}": a["tokens"] for a in report["arms"]},
        "verdict": "; ".join(beats) or "no arm beats another by more than 2× the pooled std",
        "report": dg.MetadataValue.md(ablation_markdown(report, svg_data_uri(report))),
        "json": location_value(json_path),
        "plot": location_value(svg_path),
        "duration_s": round(result.seconds, 1),
    })
