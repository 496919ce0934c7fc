"""The ``classifier`` refiner: learned line, kind, share and document models on the CPU, writing
ProX programs.

Doc level: ``drop_doc()`` with the reason in a comment when the document model (or Gopher's
repeated passages) says so, else ``keep_doc()``. Chunk level: every line gets a kind; runs of the
kinds not in ``keep_kinds`` become ``remove_lines`` calls with the kind in a trailing comment,
mojibake gets ``normalize``. Thresholds apply at the shard's estimated share of content lines.
How and why: ``docs/classifier.md``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from ..chunking import split_numbered
from ..lineage import refiner_fingerprint
from ..local_files import NotRegularFile, read_regular
from ..programs import format_call
from ..prompts import PROMPT_FORMAT_VERSION, document_of
from ..words import sentence_like
from .line_features import (DOC_FEATURES, FEATURE_NAMES, FEATURES_VERSION, ShardLineCounts,
                            chunk_features, document_features, repeated_share)
from .prior_shift import (SHARE_FEATURES, Reservoir, raw_threshold, shard_share,
                          share_features)
from .kinds import LIST, MAIN, MARKUP, parse_keep_kinds
from .signals import RulesConfig, mojibake_fixes

MODEL_FORMAT = "prox-dagster/line-classifier"
MODEL_FORMAT_VERSION = 4
PRIOR_SAMPLE_DOCS = 256        # documents whose lines estimate a shard's content share
PRIOR_SAMPLE_CHARS = 65536     # of each sampled document's text: the sample's memory is bounded
MIN_PRIOR_LINES = 200          # fewer sampled lines: the training sets' typical share is used
DEFAULT_MODEL = "classifier-web-v7.json"
DEFAULT_PRESET = "balanced"
# how the programs follow from the model's probabilities: part of the refiner version, so a
# change to it marks the shards refined before it stale even with the same model file
PROGRAMS_VERSION = 4
MAX_MODEL_BYTES = 256 << 20
_MARKUP_COLUMN = FEATURE_NAMES.index("markup")  # the shipped model is 1.4 MB; a bigger file is not one of ours


class ClassifierModelError(ValueError):
    """A model file that is missing, unreadable, truncated or of another format version."""


def default_model_path() -> Path:
    """The model that ships with the package (trained on ``../shared/data/web``; see the README)."""
    return Path(str(resources.files("prox_dagster.refiners") / "models" / DEFAULT_MODEL))


class ClassifierModel:
    """A model file: its three boosters, their thresholds and the file's sha256. Opening it
    reads and checks the file (its version and features) without building the boosters, which
    are parsed on first use: the refiner's version is known without loading the model."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            data = read_regular(self.path, "classifier model", MAX_MODEL_BYTES,
                                follow_links=True)
        except NotRegularFile as exc:
            raise ClassifierModelError(str(exc)) from None
        except OSError as exc:
            raise ClassifierModelError(f"classifier model {str(self.path)!r} cannot be read: "
                                       f"{exc.strerror or exc}") from None
        self.sha256 = hashlib.sha256(data).hexdigest()
        try:
            spec = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ClassifierModelError(
                f"classifier model {str(self.path)!r} is not a complete JSON model file "
                f"(truncated or corrupt: {exc})") from None
        if not isinstance(spec, dict) or spec.get("format") != MODEL_FORMAT:
            raise ClassifierModelError(f"{str(self.path)!r} is not a {MODEL_FORMAT} model file")
        if spec.get("format_version") != MODEL_FORMAT_VERSION:
            raise ClassifierModelError(
                f"classifier model {str(self.path)!r} has format version "
                f"{spec.get('format_version')!r}; this prox-dagster reads version "
                f"{MODEL_FORMAT_VERSION}: retrain it with `prox-dagster train-refiner`")
        if spec.get("features_version") != FEATURES_VERSION or \
                spec.get("line_features") != FEATURE_NAMES or \
                spec.get("doc_features") != DOC_FEATURES or \
                spec.get("share_features") != SHARE_FEATURES:
            raise ClassifierModelError(
                f"classifier model {str(self.path)!r} was trained on features "
                f"{spec.get('features_version')!r}, not {FEATURES_VERSION!r}: retrain it")
        try:
            self._boosters = {name: str(spec[f"{name}_model"])
                              for name in ("line", "doc", "share")}
            if spec["kind_model"] is not None:
                self._boosters["kind"] = str(spec["kind_model"])
            self.line_threshold = float(spec["line_threshold"])
            self.operating_points = {
                str(preset): (float(point["sentence_threshold"]), float(point["short_threshold"]))
                for preset, point in spec["operating_points"].items()}
            self.preset = str(spec["preset"])
            self.kinds = tuple(str(kind) for kind in spec["kinds"])
            self.noise_kinds = tuple(str(kind) for kind in spec["noise_kinds"])
            self.typical_prior = float(spec["typical_prior"])
            self.doc_threshold = float(spec["doc_threshold"])
            if self.preset not in self.operating_points or \
                    not set(self.noise_kinds) <= set(self.kinds) or \
                    (len(self.noise_kinds) > 1) != ("kind" in self._boosters):
                raise ValueError("its preset, kinds and kind model do not agree")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ClassifierModelError(f"classifier model {str(self.path)!r} is incomplete or "
                                       f"corrupt: {type(exc).__name__}: {exc}") from None
        self.name = str(spec.get("name") or self.path.stem)
        self.training = spec.get("training", {})

    @functools.cached_property
    def _parsed(self) -> dict:
        import lightgbm as lgb

        try:
            return {name: lgb.Booster(model_str=text) for name, text in self._boosters.items()}
        except lgb.basic.LightGBMError as exc:
            raise ClassifierModelError(f"classifier model {str(self.path)!r} is incomplete or "
                                       f"corrupt: {type(exc).__name__}: {exc}") from None

    @property
    def line_booster(self):
        return self._parsed["line"]

    @property
    def doc_booster(self):
        return self._parsed["doc"]

    @property
    def share_booster(self):
        return self._parsed["share"]

    def noise_kinds_of(self, matrix: np.ndarray) -> list[str]:
        """The kind of noise each row's line most likely is (the model's only noise kind when
        it was trained on one)."""
        if len(self.noise_kinds) == 1 or not len(matrix):
            return [self.noise_kinds[0]] * len(matrix)
        best = self._parsed["kind"].predict(matrix, num_threads=1).argmax(axis=1)
        return [self.noise_kinds[i] for i in best]

    def line_probabilities(self, matrix: np.ndarray) -> np.ndarray:
        if not len(matrix):
            return np.zeros(0)
        return self.line_booster.predict(matrix, num_threads=1)

    def doc_probabilities(self, matrix: np.ndarray) -> np.ndarray:
        if not len(matrix):
            return np.zeros(0)
        return self.doc_booster.predict(matrix, num_threads=1)

    def content_shares(self, matrix: np.ndarray) -> np.ndarray:
        """The share model's estimate of each document's share of content lines."""
        if not len(matrix):
            return np.zeros(0)
        return self.share_booster.predict(matrix, num_threads=1)


class ClassifierRefiner:
    backend = "classifier"
    calls_model = False
    dialect = "prox"
    tokenizer = None
    max_doc_prompt_tokens = None

    def __init__(self, model: str | Path | None = None, config: RulesConfig | None = None, *,
                 keep_kinds: str | Sequence[str] | None = None, preset: str | None = None):
        self.model = ClassifierModel(model or default_model_path())
        self.config = config or RulesConfig()
        self.model_id = self.model.name
        try:
            self.keep_kinds = parse_keep_kinds(keep_kinds)
        except ValueError as exc:
            raise ClassifierModelError(str(exc)) from None
        missing = [kind for kind in self.keep_kinds if kind not in self.model.kinds]
        if missing:
            raise ClassifierModelError(
                f"keep_kinds names {', '.join(missing)}, which classifier model "
                f"{str(self.model.path)!r} was not trained to tell apart (its kinds: "
                f"{', '.join(self.model.kinds)}): retrain it on sets that label them, or "
                f"keep only its kinds")
        self.preset = preset or self.model.preset
        if self.preset not in self.model.operating_points:
            raise ClassifierModelError(
                f"preset {self.preset!r} is not one of classifier model "
                f"{str(self.model.path)!r}'s: {', '.join(self.model.operating_points)}")
        self.thresholds = self.model.operating_points[self.preset]
        self.version = refiner_fingerprint(
            self.backend, self.model_id,
            {"sha256": self.model.sha256, "features": FEATURES_VERSION,
             "programs": PROGRAMS_VERSION, "prompt": PROMPT_FORMAT_VERSION,
             "dialect": self.dialect, "rules": dataclasses.asdict(self.config),
             "preset": self.preset, "keep_kinds": list(self.keep_kinds)})
        self._shard: ShardLineCounts | None = None
        self._sample: list[str] = []
        self._prior: float | None = None

    def observe_shard(self, documents: Iterable[str]) -> None:
        """Count the lines of the shard's documents (the cross-document repetition signal) and
        keep a fixed sample of them, whose lines estimate the shard's share of content lines
        when a chunk is first judged (doc programs do not need it)."""
        sample = Reservoir(PRIOR_SAMPLE_DOCS)
        self._shard = ShardLineCounts(
            text.split("\n") for text in sample.passing(
                documents, lambda text: text[:PRIOR_SAMPLE_CHARS]))
        self._sample, self._prior = sample.items, None

    @property
    def prior(self) -> float:
        """The observed shard's estimated share of content lines (the training sets' typical
        share before a shard is observed, or when its sample has too few lines)."""
        if self._prior is None:
            judged = self._line_probabilities([text.split("\n") for text in self._sample])
            lines = np.asarray([len(p) for _, _, p in judged], dtype=np.float64)
            rows = np.asarray([share_features(p, m) for m, _, p in judged], dtype=np.float64)
            self._prior = shard_share(
                self.model.content_shares(rows.reshape(len(judged), len(SHARE_FEATURES))),
                lines) if lines.sum() >= MIN_PRIOR_LINES else self.model.typical_prior
            self._sample = []
        return self._prior

    @property
    def repetition_threshold(self) -> float:
        """The line probability from which the doc-level repetition guard counts a line: likely
        content for the document model, and kept by the chunk programs of a shard with the
        training sets' typical share of content whatever its shape (the higher of the sentence
        and short-line thresholds). So a page that carries its article again in metadata lines
        the chunk programs remove is not repetitive, and the doc stage does not wait for the
        shard's own estimate. Counting from the sentence threshold, lower, dropped 6% of
        scrapinghub-aeb's content lines with their pages, held out; from the higher one, 1%."""
        return max(self.model.line_threshold,
                   raw_threshold(max(self.thresholds), self.model.typical_prior))

    @property
    def chunk_thresholds(self) -> tuple[float, float]:
        """The line probabilities under which a chunk's sentence and short line are removed,
        for the observed shard."""
        return (raw_threshold(self.thresholds[0], self.prior),
                raw_threshold(self.thresholds[1], self.prior))

    def shard_metadata(self) -> dict:
        """The observed shard's estimated share of content lines, the line probabilities under
        which its chunks' sentences and short lines are removed, and what is kept."""
        sentence, short = self.chunk_thresholds
        return {"estimated_content_share": round(self.prior, 4),
                "chunk_sentence_threshold": round(sentence, 4),
                "chunk_short_line_threshold": round(short, 4),
                "preset": self.preset, "keep_kinds": ", ".join(self.keep_kinds)}

    def generate(self, prompts: Sequence[str], *, level: str) -> list[str]:
        if level == "doc":
            return self.doc_programs([document_of(p, "doc") for p in prompts])
        if level == "chunk":
            return self.chunk_programs([document_of(p, "chunk") for p in prompts])
        raise ValueError(f"level must be 'doc' or 'chunk', not {level!r}")

    def _line_probabilities(self, documents: list[list[str]]):
        features = [chunk_features(lines, self._shard, self.config) for lines in documents]
        stacked = np.vstack([m for m, _ in features]) if features else np.zeros((0, 1))
        probabilities = self.model.line_probabilities(stacked)
        out, position = [], 0
        for matrix, indices in features:
            out.append((matrix, indices, probabilities[position:position + len(indices)]))
            position += len(indices)
        return out

    def doc_programs(self, texts: Sequence[str]) -> list[str]:
        split = [text.split("\n") for text in texts]
        judged = self._line_probabilities(split)
        rows = [document_features(lines, indices, probs, matrix, self.model.line_threshold)
                for lines, (matrix, indices, probs) in zip(split, judged)]
        scores = self.model.doc_probabilities(np.asarray(rows, dtype=np.float64).reshape(
            len(rows), len(DOC_FEATURES)))
        counted_from = self.repetition_threshold
        programs = []
        for lines, (_, indices, probs), p in zip(split, judged, scores):
            repeated = repeated_share(lines, indices, probs, counted_from)
            # word-for-word repetition beyond anything in the labelled pages: trees do not
            # extrapolate, so the Gopher rule (at the rules refiner's threshold) decides
            if repeated > self.config.max_dup_5gram_char_ratio:
                programs.append(f"drop_doc()  # classifier repeated passages {repeated:.2f}")
            elif p < self.model.doc_threshold:
                programs.append(f"drop_doc()  # classifier p_good={p:.2f}")
            else:
                programs.append("keep_doc()")
        return programs

    def chunk_programs(self, chunks: Sequence[str]) -> list[str]:
        # a chunk without our numbering is left alone
        parsed = [(split[1], split[0]) if (split := split_numbered(chunk)) else None
                  for chunk in chunks]
        numbered = [p for p in parsed if p is not None]
        kinds = iter(self._kinds([lines for lines, _ in numbered], self._line_probabilities(
            [lines for lines, _ in numbered])))
        return [self._chunk_program(item[0], item[1], next(kinds)) if item is not None
                else "keep_chunk()" for item in parsed]

    def line_kinds(self, lines: Sequence[str], matrix: np.ndarray, indices: Sequence[int],
                   probs: np.ndarray) -> list[str | None]:
        """What each line of a chunk is (``None`` for a blank line): markup when the detector
        says so; content (``main`` for a sentence, ``list`` for a short line) at or above the
        shard's threshold for its shape; else the kind of noise the kind model names."""
        return self._kinds([lines], [(matrix, indices, probs)])[0]

    def _kinds(self, chunks: Sequence[Sequence[str]], judged) -> list[list[str | None]]:
        """:meth:`line_kinds` of every chunk, the kind model asked once for all of them."""
        sentence_from, short_from = self.chunk_thresholds
        out, noise, noise_rows = [], [], []
        for lines, (matrix, indices, probs) in zip(chunks, judged):
            kinds: list[str | None] = [None] * len(lines)
            for row, i in enumerate(indices):
                if matrix[row, _MARKUP_COLUMN] > 0:
                    kinds[i] = MARKUP
                    continue
                sentence = sentence_like(lines[i], "cjk")
                if probs[row] >= (sentence_from if sentence else short_from):
                    kinds[i] = MAIN if sentence else LIST
                else:
                    noise.append((kinds, i))
                    noise_rows.append(matrix[row])
            out.append(kinds)
        named = self.model.noise_kinds_of(np.vstack(noise_rows) if noise_rows
                                          else np.zeros((0, len(FEATURE_NAMES))))
        for (kinds, i), kind in zip(noise, named):
            kinds[i] = kind
        return out

    def _chunk_program(self, lines: list[str], numbers: list[int],
                       kinds: list[str | None]) -> str:
        removed = [None if kind is None or kind in self.keep_kinds else kind for kind in kinds]
        calls = [format_call("normalize", source_str=bad, target_str=good)
                 for bad, good in mojibake_fixes("\n".join(
                     line for line, r in zip(lines, removed) if r is None)).items()]
        for start, end, kind in kind_runs(removed, [not line.strip() for line in lines]):
            calls.append(format_call("remove_lines", line_start=numbers[start],
                                     line_end=numbers[end]) + f"  # {kind}")
        return "\n".join(calls) if calls else "keep_chunk()"


def kind_runs(removed: Sequence[str | None],
              blank: Sequence[bool]) -> list[tuple[int, int, str]]:
    """Inclusive runs of lines of one removed kind (``None``: kept, or blank); blank lines
    between two lines of the same kind belong to their run."""
    runs: list[tuple[int, int, str]] = []
    current: list | None = None
    for i, kind in enumerate(removed):
        if kind is None:
            if not blank[i] and current is not None:
                runs.append((current[0], current[1], current[2]))
                current = None
        elif current is not None and current[2] == kind:
            current[1] = i
        else:
            if current is not None:
                runs.append((current[0], current[1], current[2]))
            current = [i, i, kind]
    if current is not None:
        runs.append((current[0], current[1], current[2]))
    return runs
