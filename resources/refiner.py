"""The refiner (a GPU resource for LM backends) and the program execution policy."""

import hashlib
import json

import dagster as dg
from pydantic import PrivateAttr

from prox_dagster.execute import ExecutionPolicy
from prox_dagster.refiners import Refiner, build_refiner


class RefinerResource(dg.ConfigurableResource):
    """Which refiner writes the programs. Built once per run and shared by the doc and chunk
    steps; ``version`` is the lineage fingerprint used as the refiner assets' code version."""

    backend: str = "rules"
    batch_size: int = 256
    options: dict[str, float] = {}

    _refiner: Refiner | None = PrivateAttr(default=None)

    def get(self) -> Refiner:
        if self._refiner is None:
            self._refiner = build_refiner(self.backend, **self.options)
        return self._refiner

    @property
    def version(self) -> str:
        return self.get().version


class ProgramPolicy(dg.ConfigurableResource):
    """Thresholds and modes of program execution (see ``prox_dagster.execute``)."""

    drop_word_ratio: float = 0.05
    min_words: int = 10
    max_errors: int = 2
    normalize_scope: str = "chunk"
    remove_all_scope: str = "chunk"
    doc_decision: str = "parsed"

    def policy(self) -> ExecutionPolicy:
        for name, allowed in (("normalize_scope", ("chunk", "document")),
                              ("remove_all_scope", ("chunk", "document")),
                              ("doc_decision", ("parsed", "substring"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ProgramPolicy.{name} must be one of {allowed}")
        return ExecutionPolicy(self.drop_word_ratio, self.min_words, self.max_errors,
                               self.normalize_scope, self.remove_all_scope, self.doc_decision)

    @property
    def version(self) -> str:
        settings = json.dumps(self.policy().__dict__, sort_keys=True)
        return "policy@" + hashlib.sha256(settings.encode()).hexdigest()[:8]
