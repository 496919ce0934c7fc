"""Does refining make a better model? The same small causal LM trained from scratch on arms of
the same raw documents (raw, refined, naive, ...), compared by loss on held-out clean text.

Arms are read by the libraries that train from them in production (megatron-core's
``IndexedDataset``, litdata's ``StreamingDataset``); every arm gets the same token budget per
seed; validation lines found in any arm are removed; an arm beats another only by more than twice
the pooled standard deviation over at least 3 seeds. Design: ``docs/architecture.md``; use:
``docs/ablation.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import environment
from .token_files import pack_litgpt, write_token_files
from .tokenization import rust_tokenizer, tokenizer_name

Log = Callable[[str], None]


class AblationError(ValueError):
    """An ablation that cannot be run honestly (an empty arm, an overlapping validation set, a
    token file the trainer's reader rejects), said before or instead of training."""


@dataclass(frozen=True)
class TrainConfig:
    """A model and a budget. ``train_tokens`` per arm and seed is ``steps × batch_size ×
    seq_len``; ``evals`` points of the validation loss curve (the last is the reported loss)."""

    name: str
    layers: int
    hidden: int
    heads: int
    intermediate: int
    seq_len: int
    batch_size: int
    steps: int
    lr: float
    warmup: int
    seeds: tuple[int, ...] = (0, 1, 2)
    weight_decay: float = 0.1
    evals: int = 5
    max_val_tokens: int = 65536
    max_overlap: float = 0.2
    device: str = "auto"       # auto: CUDA when there is one
    threads: int = 0           # CPU threads; 0: OMP_NUM_THREADS, else every core

    @property
    def train_tokens(self) -> int:
        return self.steps * self.batch_size * self.seq_len

    def check(self) -> "TrainConfig":
        if len(self.seeds) < 3 or len(set(self.seeds)) != len(self.seeds):
            raise AblationError(f"config {self.name!r}: at least 3 distinct seeds are needed for "
                                f"a mean ± std, not {list(self.seeds)}")
        positive = ("layers", "hidden", "heads", "intermediate", "seq_len", "batch_size",
                    "steps", "evals", "max_val_tokens")
        bad = [name for name in positive if getattr(self, name) < 1]
        if bad or self.hidden % self.heads or not 0 < self.lr < 1 or \
                not 0 <= self.max_overlap < 1 or self.warmup < 0:
            raise AblationError(f"config {self.name!r}: {', '.join(bad) or 'hidden/heads, lr, warmup or max_overlap'} "
                                "out of range (sizes positive, hidden a multiple of heads, 0 < lr < 1, "
                                "0 <= max_overlap < 1)")
        return self


# tiny: the test suite's; cpu: all three arms × 3 seeds in under 15 minutes on 2 cores;
# gpu: ~100M parameters with a 32k vocabulary and ~130M tokens per run, minutes on one H100
CONFIGS = {
    "tiny": TrainConfig("tiny", layers=1, hidden=32, heads=2, intermediate=64, seq_len=32,
                        batch_size=4, steps=8, lr=3e-3, warmup=2, evals=2,
                        max_val_tokens=2048),
    "cpu": TrainConfig("cpu", layers=2, hidden=128, heads=4, intermediate=384, seq_len=128,
                       batch_size=16, steps=250, lr=2e-3, warmup=25, max_val_tokens=32768),
    "gpu": TrainConfig("gpu", layers=12, hidden=768, heads=12, intermediate=2048, seq_len=1024,
                       batch_size=32, steps=4000, lr=6e-4, warmup=200, evals=10,
                       max_val_tokens=1 << 20),
}


def load_config(name_or_path: str, **overrides) -> TrainConfig:
    """A named config (``CONFIGS``) or a JSON file of fields, which start from ``cpu``'s."""
    if name_or_path in CONFIGS:
        config = CONFIGS[name_or_path]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise AblationError(f"config {name_or_path!r}: neither one of {sorted(CONFIGS)} "
                                "nor a JSON file")
        try:
            values = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AblationError(f"config {path}: not readable JSON: {exc}") from None
        known = {f.name for f in fields(TrainConfig)}
        if not isinstance(values, dict) or set(values) - known:
            raise AblationError(f"config {path}: unknown fields "
                                f"{sorted(set(values) - known) if isinstance(values, dict) else values!r}"
                                f"; known: {sorted(known)}")
        if "seeds" in values:
            values["seeds"] = tuple(values["seeds"])
        config = replace(CONFIGS["cpu"], name=path.stem, **values)
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    return config.check()


# ---------------------------------------------------------------------------------------------
# arms

READERS = ("megatron", "litgpt")  # the token formats an arm trains from


@dataclass
class Arm:
    """One arm: its token files and the library that reads them (``fmt``): ``megatron``, path
    prefixes of ``.bin``/``.idx`` pairs; ``litgpt``, one folder holding a litdata set
    (``index.json``); and what produced them (``source``: e.g. the refiner version)."""

    name: str
    files: list[str]
    documents: int
    tokens: int
    source: str
    texts: list[str] = field(default_factory=list, repr=False)  # its training text, for dedup
    fmt: str = "megatron"


def text_arm(name: str, documents: Iterable[tuple[str, str | None]],
             out_dir: str | os.PathLike, tokenizer, source: str, *, fmt: str = "megatron",
             chunk_size: int = 129 * 1024) -> Arm:
    """An arm from texts: ``(id, text)`` pairs in order, tokenized by the same writer as the
    pre-training set (EOS after every document) into ``fmt`` files in ``out_dir``; for
    ``litgpt``, the stream packed into chunks of ``chunk_size`` tokens as a litdata set."""
    if fmt not in READERS:
        raise AblationError(f"arm {name!r}: format {fmt!r} is none of {READERS}")
    ids, texts = [], []
    for doc_id, text in documents:
        if text and text.strip():
            ids.append(doc_id)
            texts.append(text)
    if not texts:
        raise AblationError(f"arm {name!r} ({source}) has no documents with text: nothing to "
                            "train on")
    frame = pa.table({"id": ids, "text": texts, "status": ["kept"] * len(ids)})
    buffer = io.BytesIO()
    pq.write_table(frame, buffer)
    buffer.seek(0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = write_token_files(buffer, out, name, tokenizer, fmt)
    if written.tokens == 0:
        raise AblationError(f"arm {name!r} ({source}) has no tokens: nothing to train on")
    if fmt == "megatron":
        files = [str(out / name)]
    else:
        with open(out / f"{name}.tokens", "rb") as stream:
            pack_litgpt([stream], out / name, np.dtype(written.dtype), chunk_size=chunk_size,
                        sep_token=tokenizer.eos_token_id, litdata=True)
        files = [str(out / name)]
    return Arm(name, files, written.documents, written.tokens, source, texts, fmt)


def _quiet_import(load):
    with warnings.catch_warnings():  # megatron-core's notices about optional CUDA kernels
        warnings.simplefilter("ignore")
        return load()


class MegatronBlocks:
    """Training blocks of ``seq_len + 1`` tokens over an arm's Megatron files, read with
    megatron-core's ``IndexedDataset`` (memory-mapped: an arm costs its index, not its
    tokens); neighbouring blocks share a token, as in Megatron's GPT dataset."""

    def __init__(self, arm: Arm, seq_len: int):
        def load():
            from megatron.core.datasets.indexed_dataset import IndexedDataset
            return IndexedDataset

        IndexedDataset = _quiet_import(load)
        self.datasets, lengths, owners = [], [], []
        for prefix in arm.files:
            try:
                dataset = IndexedDataset(prefix)
                sizes = np.asarray(dataset.sequence_lengths, dtype=np.int64)
            except Exception as exc:  # the reader's own complaint, whatever its type
                raise AblationError(f"arm {arm.name!r}: megatron-core's IndexedDataset rejects "
                                    f"{prefix}.idx / .bin: {type(exc).__name__}: {exc}") from exc
            owners.append(np.stack([np.full(len(sizes), len(self.datasets)),
                                    np.arange(len(sizes))], axis=1))
            self.datasets.append(dataset)
            lengths.append(sizes)
        self.lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        self.owners = np.concatenate(owners) if owners else np.zeros((0, 2), np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)])
        self.tokens = int(self.starts[-1])
        self.seq_len = seq_len
        self.blocks = max(0, (self.tokens - 1) // seq_len)
        _check_read(arm, self.tokens, self.blocks, seq_len, "megatron-core")

    def block(self, index: int) -> np.ndarray:
        begin = index * self.seq_len
        end = begin + self.seq_len + 1
        doc = int(np.searchsorted(self.starts, begin, side="right")) - 1
        pieces = []
        while begin < end:
            file_index, local = self.owners[doc]
            offset = begin - int(self.starts[doc])
            length = min(int(self.lengths[doc]) - offset, end - begin)
            pieces.append(self.datasets[file_index].get(int(local), offset=offset, length=length))
            begin += length
            doc += 1
        return np.concatenate(pieces).astype(np.int64)


class LitdataBlocks:
    """Training blocks of ``seq_len + 1`` tokens over an arm's litdata set, read with litdata's
    ``StreamingDataset`` and ``TokensLoader``, as ``litgpt pretrain --data LitData`` reads it:
    blocks do not overlap, and the tokens after a chunk's last whole block are not read."""

    def __init__(self, arm: Arm, seq_len: int):
        def load():
            from litdata import StreamingDataset, TokensLoader
            return StreamingDataset, TokensLoader

        StreamingDataset, TokensLoader = _quiet_import(load)
        folder = arm.files[0]
        try:
            self.dataset = StreamingDataset(folder, item_loader=TokensLoader(block_size=seq_len + 1),
                                            shuffle=False)
            self.blocks = len(self.dataset)
            # the index's token counts (what litdata serves blocks from), to check the arm
            index = json.loads((Path(folder) / "index.json").read_text())
            tokens = sum(int(chunk["dim"]) for chunk in index["chunks"])
        except Exception as exc:  # the reader's own complaint, whatever its type
            raise AblationError(f"arm {arm.name!r}: litdata's StreamingDataset rejects "
                                f"{folder}/index.json: {type(exc).__name__}: {exc}") from exc
        _check_read(arm, tokens, self.blocks, seq_len, "litdata")

    def block(self, index: int) -> np.ndarray:
        with warnings.catch_warnings():  # litdata copies out of its read-only memory map
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            return np.asarray(self.dataset[index], dtype=np.int64)


def _check_read(arm: Arm, tokens: int, blocks: int, seq_len: int, reader: str) -> None:
    if tokens != arm.tokens:
        raise AblationError(f"arm {arm.name!r}: {reader} reads {tokens} tokens from "
                            f"{', '.join(arm.files)}, the arm lists {arm.tokens}")
    if blocks == 0:
        raise AblationError(f"arm {arm.name!r}: {tokens} tokens do not fill one block of "
                            f"{seq_len + 1}")


def blocks_of(arm: Arm, seq_len: int):
    return (MegatronBlocks if arm.fmt == "megatron" else LitdataBlocks)(arm, seq_len)


def schedule(blocks: int, needed: int, seed: int) -> tuple[np.ndarray, int]:
    """The block order of one run: whole shuffled epochs (seeded) until ``needed`` blocks; and
    how many epochs that took."""
    rng = np.random.default_rng(seed)
    epochs = math.ceil(needed / blocks)
    order = np.concatenate([rng.permutation(blocks) for _ in range(epochs)])[:needed]
    return order, epochs


# ---------------------------------------------------------------------------------------------
# validation

_WORD = re.compile(r"\w+", re.UNICODE)
SHINGLE = 5
NEAR = 0.5  # a line whose 5-grams are at least this much in the training text is a near copy


def _norm(line: str) -> list[str]:
    return _WORD.findall(line.lower())


def _hash(words: Sequence[str]) -> int:
    digest = hashlib.blake2b(" ".join(words).encode("utf-8", "replace"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def _found(values: list[int], sorted_values: np.ndarray) -> np.ndarray:
    """Which of ``values`` are in ``sorted_values`` (binary search: O(m log n))."""
    wanted = np.asarray(values, dtype=np.int64)
    if not len(sorted_values):
        return np.zeros(len(wanted), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_values, wanted), len(sorted_values) - 1)
    return sorted_values[at] == wanted


def _shingles(words: list[str]) -> list[int]:
    return [_hash(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)]


@dataclass
class Validation:
    texts: list[str]
    documents: int
    lines: int
    words: int
    removed_exact: int      # lines
    removed_near: int       # lines
    removed_words: int

    @property
    def removed_share(self) -> float:
        """The share of the validation's words removed as in the training text."""
        return self.removed_words / self.words if self.words else 0.0


def deduplicated_validation(texts: Sequence[str], training: Iterable[str],
                            max_overlap: float) -> Validation:
    """``texts`` without the lines that are in the training text, exactly (same words) or
    nearly (at least half of the line's word 5-grams occur in it); refused when the lines
    removed hold more than ``max_overlap`` of the words (by words: a held-out page's one-word
    lines, "Reply" or "12d ago", are in any crawl; its paragraphs must not be). Memory: 8 bytes
    per training line and 5-gram."""
    lines_seen, grams = [], []
    for text in training:
        for line in text.split("\n"):
            words = _norm(line)
            if words:
                lines_seen.append(_hash(words))
                grams.extend(_shingles(words))
    exact = np.unique(np.asarray(lines_seen, dtype=np.int64))
    shingles = np.unique(np.asarray(grams, dtype=np.int64))
    kept_texts = []
    total = total_words = removed_exact = removed_near = removed_words = 0
    for text in texts:
        kept = []
        for line in text.split("\n"):
            words = _norm(line)
            if not words:
                continue
            total += 1
            total_words += len(words)
            if _found([_hash(words)], exact)[0]:
                removed_exact += 1
                removed_words += len(words)
                continue
            own = _shingles(words)
            if own and _found(own, shingles).mean() >= NEAR:
                removed_near += 1
                removed_words += len(words)
                continue
            kept.append(line)
        if kept:
            kept_texts.append("\n".join(kept))
    result = Validation(kept_texts, len(texts), total, total_words, removed_exact,
                        removed_near, removed_words)
    if not total:
        raise AblationError("validation: no text with words to score on")
    if result.removed_share > max_overlap or not kept_texts:
        raise AblationError(
            f"validation overlaps the training text: {removed_exact} of its {total} lines are "
            f"in an arm's training text and {removed_near} nearly, {result.removed_share:.1%} "
            f"of its words (> max_overlap {max_overlap:.0%}); hold those pages out of every "
            "arm or name another validation set")
    return result


def gold_text(record: dict) -> str | None:
    """A record's clean text: ``clean_text``; else its content lines by ``line_labels`` /
    ``line_labels_derived`` (``M`` or ``1``); else, for a record with no label at all, its
    ``text``. Others (a document label only) give none."""
    clean = record.get("clean_text")
    if isinstance(clean, str) and clean.strip():
        return clean
    text = record.get("text")
    if not isinstance(text, str):
        return None
    labels = record.get("line_labels") or record.get("line_labels_derived")
    if isinstance(labels, str):
        lines = text.split("\n")
        if len(labels) != len(lines):
            return None
        return "\n".join(line for line, label in zip(lines, labels) if label in "M1") or None
    return None if "label" in record else text


# ---------------------------------------------------------------------------------------------
# training

@dataclass
class SeedRun:
    seed: int
    val_loss: float
    bits_per_byte: float
    curve: list[tuple[int, float]]          # (step, validation loss)
    train_curve: list[tuple[int, float]]    # (step, mean training loss since the last point)
    seconds: float


@dataclass
class ArmResult:
    name: str
    source: str
    documents: int
    tokens: int
    blocks: int
    epochs: int
    runs: list[SeedRun]
    fmt: str = "megatron"

    @property
    def losses(self) -> np.ndarray:
        return np.array([r.val_loss for r in self.runs])

    def summary(self) -> dict:
        losses = self.losses
        bpb = np.array([r.bits_per_byte for r in self.runs])
        return {"name": self.name, "source": self.source, "documents": self.documents,
                "tokens": self.tokens, "format": self.fmt, "blocks": self.blocks,
                "epochs": self.epochs,
                "repeated": self.epochs > 1,
                "val_loss_mean": float(losses.mean()), "val_loss_std": float(losses.std(ddof=1)),
                "bits_per_byte_mean": float(bpb.mean()), "bits_per_byte_std": float(bpb.std(ddof=1)),
                "runs": [asdict(r) for r in self.runs]}


def verdicts(arms: Sequence[ArmResult]) -> list[dict]:
    """Every ordered pair's verdict: ``a`` beats ``b`` when b's mean loss exceeds a's by more
    than twice the pooled standard deviation."""
    out = []
    for a in arms:
        for b in arms:
            if a is b:
                continue
            gap = float(b.losses.mean() - a.losses.mean())
            pooled = float(math.sqrt((a.losses.var(ddof=1) + b.losses.var(ddof=1)) / 2))
            out.append({"a": a.name, "b": b.name, "gap": gap, "pooled_std": pooled,
                        "threshold": 2 * pooled, "beats": gap > 2 * pooled})
    return out


def _device(config: TrainConfig):
    import torch

    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def _model(config: TrainConfig, vocab: int, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=config.hidden, intermediate_size=config.intermediate,
        num_hidden_layers=config.layers, num_attention_heads=config.heads,
        num_key_value_heads=config.heads, max_position_embeddings=config.seq_len,
        tie_word_embeddings=True, use_cache=False, bos_token_id=None, eos_token_id=None,
        pad_token_id=None))


def _loss(model, batch, device, autocast):
    import torch
    import torch.nn.functional as F

    batch = torch.as_tensor(batch, device=device)
    with autocast():
        logits = model(input_ids=batch[:, :-1]).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                           batch[:, 1:].reshape(-1), reduction="sum")


def _evaluate(model, val_blocks: np.ndarray, config: TrainConfig, device, autocast) -> float:
    import torch

    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(val_blocks), config.batch_size):
            total += float(_loss(model, val_blocks[start:start + config.batch_size], device,
                                 autocast))
    model.train()
    return total / (len(val_blocks) * config.seq_len)


def train_run(blocks, val_blocks: np.ndarray, bytes_per_token: float,
              config: TrainConfig, vocab: int, seed: int,
              log: Log = lambda _: None) -> tuple[SeedRun, int]:
    """One arm, one seed: the model trained on ``config.steps`` batches from the arm's blocks;
    its validation curve and final loss, and the epochs the budget took."""
    import torch

    started = time.perf_counter()
    device = _device(config)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" \
        else contextlib.nullcontext
    model = _model(config, vocab, seed).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": other, "weight_decay": 0.0}],
                                  lr=config.lr, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))

    order, epochs = schedule(blocks.blocks, config.steps * config.batch_size, seed)
    marks = {round(config.steps * (i + 1) / config.evals) for i in range(config.evals)}
    curve, train_curve, running, counted = [], [], 0.0, 0
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        ids = order[step * config.batch_size:(step + 1) * config.batch_size]
        batch = np.stack([blocks.block(int(i)) for i in ids])
        loss = _loss(model, batch, device, autocast) / batch[:, 1:].size
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running += loss.item()
        counted += 1
        if step + 1 in marks:
            val = _evaluate(model, val_blocks, config, device, autocast)
            curve.append((step + 1, val))
            train_curve.append((step + 1, running / counted))
            running, counted = 0.0, 0
            log(f"step {step + 1}/{config.steps}: train loss {train_curve[-1][1]:.3f}, "
                f"validation loss {val:.3f}")
    final = curve[-1][1]
    return SeedRun(seed, final, final / math.log(2) / bytes_per_token, curve, train_curve,
                   time.perf_counter() - started), epochs


def validation_blocks(texts: Sequence[str], tokenizer, config: TrainConfig
                      ) -> tuple[np.ndarray, float, int]:
    """Validation texts as blocks of ``seq_len + 1`` tokens (EOS after each text, at most
    ``max_val_tokens``, from the texts in a fixed shuffled order, so a cut keeps texts of every
    source rather than the first ones), the UTF-8 bytes per token, and the tokens scored."""
    backend = rust_tokenizer(tokenizer)
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    nbytes = 0
    for position in np.random.default_rng(0).permutation(len(texts)):
        text = texts[int(position)]
        ids = backend.encode(text, add_special_tokens=False).ids + [eos]
        stream.extend(ids)
        nbytes += len(text.encode("utf-8", "replace")) + 1
        if len(stream) > config.max_val_tokens + 1:
            break
    kept = min(len(stream), config.max_val_tokens + 1)
    count = (kept - 1) // config.seq_len
    if count == 0:
        raise AblationError(f"validation: {len(stream)} tokens do not fill one block of "
                            f"{config.seq_len + 1}")
    array = np.asarray(stream[:count * config.seq_len + 1], dtype=np.int64)
    blocks = np.stack([array[i * config.seq_len:(i + 1) * config.seq_len + 1]
                       for i in range(count)])
    bytes_per_token = nbytes / len(stream)
    return blocks, bytes_per_token, count * config.seq_len


@dataclass
class AblationResult:
    config: TrainConfig
    tokenizer: str
    device: str
    validation: dict
    arms: list[ArmResult]
    seconds: float

    @property
    def verdicts(self) -> list[dict]:
        return verdicts(self.arms)

    def to_json(self) -> dict:
        return {"config": {**asdict(self.config), "train_tokens": self.config.train_tokens},
                "tokenizer": self.tokenizer, "device": self.device,
                "validation": self.validation,
                "arms": [arm.summary() for arm in self.arms],
                "verdicts": self.verdicts, "seconds": self.seconds}


def run_ablation(arms: Sequence[Arm], validation: Sequence[str], tokenizer,
                 config: TrainConfig, *, tokenizer_label: str | None = None,
                 log: Log = lambda _: None) -> AblationResult:
    """Train every arm with every seed of ``config`` and score each on the validation texts,
    once they are deduplicated against every arm's training text. Every arm and the validation
    are checked before any training starts."""
    import torch

    started = time.perf_counter()
    config.check()
    names = [arm.name for arm in arms]
    if len(set(names)) != len(names) or len(arms) < 2:
        raise AblationError(f"arms {names}: at least two, with distinct names")
    for arm in arms:
        if arm.tokens == 0 or arm.documents == 0:
            raise AblationError(f"arm {arm.name!r} ({arm.source}) has no tokens: nothing to "
                                "train on")
    readers = {arm.name: blocks_of(arm, config.seq_len) for arm in arms}
    checked = deduplicated_validation(validation, (t for arm in arms for t in arm.texts),
                                      config.max_overlap)
    val_blocks, bytes_per_token, val_tokens = validation_blocks(checked.texts, tokenizer, config)
    if config.threads:
        torch.set_num_threads(config.threads)
    elif environment.value("OMP_NUM_THREADS").isdigit():
        torch.set_num_threads(int(environment.value("OMP_NUM_THREADS")))
    device = _device(config)
    log(f"validation: {checked.documents} texts, {checked.lines} lines, "
        f"{checked.removed_exact} removed as in the training text and {checked.removed_near} "
        f"nearly ({checked.removed_share:.1%} of the words); {val_tokens} tokens. Budget: {config.train_tokens} tokens per arm and seed "
        f"on {device}")
    results = []
    vocab = len(tokenizer)
    for arm in arms:
        blocks = readers[arm.name]
        runs, epochs = [], 1
        for seed in config.seeds:
            log(f"arm {arm.name}: seed {seed}")
            run, epochs = train_run(blocks, val_blocks, bytes_per_token, config, vocab, seed,
                                    log=lambda m, a=arm.name: log(f"{a}: {m}"))
            runs.append(run)
        if epochs > 1:
            log(f"arm {arm.name}: {blocks.blocks} blocks for a budget of "
                f"{config.steps * config.batch_size}: repeated over {epochs} epochs")
        results.append(ArmResult(arm.name, arm.source, arm.documents, arm.tokens, blocks.blocks,
                                 epochs, runs, arm.fmt))
    name = str(torch.cuda.get_device_name(device)) if device.type == "cuda" else \
        f"cpu ({torch.get_num_threads()} threads)"
    return AblationResult(config, tokenizer_label or tokenizer_name(tokenizer), name, {
        "documents": checked.documents, "texts_kept": len(checked.texts),
        "lines": checked.lines, "words": checked.words,
        "removed_exact": checked.removed_exact, "removed_near": checked.removed_near,
        "removed_words": checked.removed_words, "removed_share": checked.removed_share,
        "tokens": val_tokens, "bytes_per_token": bytes_per_token}, results,
        time.perf_counter() - started)
