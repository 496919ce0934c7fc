"""Dagster resources: thin, configurable wrappers around the engine."""

from .labelled_sets import LabelledSets
from .quality import CheckThresholds
from .raw_source import RawSource
from .refiner import ProgramPolicy, RefinerResource
from .storage import ShardStorage
from .tokenizer import TokenizerResource

__all__ = ["CheckThresholds", "LabelledSets", "ProgramPolicy", "RawSource", "RefinerResource", "ShardStorage",
           "TokenizerResource"]
