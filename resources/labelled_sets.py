"""Which labelled sets the refiner is evaluated on and trained from, and where models go."""

import dagster as dg

from prox_dagster import environment
from prox_dagster.evaluation import LabelledSet, load_labelled_set


class LabelledSets(dg.ConfigurableResource):
    """``evaluation`` / ``training``: labelled sets (JSONL files, or folders holding
    ``docs.jsonl``) in the format of ``prox_dagster.evaluation``; ``ablation``: held-out clean
    texts the training ablation scores its arms on (``clean_text``, labelled content lines or
    ``text``); ``model_dir``: the local folder trained classifier models are written to."""

    evaluation: list[str] = []
    training: list[str] = []
    ablation: list[str] = []
    model_dir: str = ""

    @classmethod
    def from_env(cls, default_sets: list[str], model_dir: str,
                 default_heldout: list[str] | None = None) -> "LabelledSets":
        """``PROX_EVAL_SETS`` / ``PROX_TRAIN_SETS`` / ``PROX_ABLATION_SETS`` (paths separated
        by ``:`` or ``,``), else ``default_sets`` (``default_heldout`` for the ablation);
        ``PROX_MODEL_DIR``, else ``model_dir``."""
        return cls(evaluation=environment.paths("PROX_EVAL_SETS") or default_sets,
                   training=environment.paths("PROX_TRAIN_SETS") or default_sets,
                   ablation=environment.paths("PROX_ABLATION_SETS") or default_heldout or [],
                   model_dir=environment.value("PROX_MODEL_DIR") or model_dir)

    def load(self, which: str) -> list[LabelledSet]:
        paths = self.evaluation if which == "evaluation" else self.training
        if not paths:
            raise ValueError(f"no {which} sets: set PROX_{'EVAL' if which == 'evaluation' else 'TRAIN'}"
                             "_SETS or the labelled_sets resource's config")
        return [load_labelled_set(path) for path in paths]
