"""Dagster resources: thin, configurable wrappers around the engine."""

from .labelled_sets import LabelledSets
from .quality import CheckThresholds
from .raw_source import RawSource
from .refiner import (ClassifierSettings, HFSettings, OpenAISettings, ProgramPolicy,
                      RefinerResource, RulesSettings, VLLMSettings)
from .storage import ShardStorage
from .tokenizer import TokenizerResource

__all__ = ["CheckThresholds", "ClassifierSettings", "HFSettings", "LabelledSets",
           "OpenAISettings", "ProgramPolicy", "RawSource", "RefinerResource", "RulesSettings",
           "ShardStorage", "TokenizerResource", "VLLMSettings"]
