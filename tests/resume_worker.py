"""Run by tests/test_resume.py in a child process that the test kills with SIGKILL mid-step:
materialize every stage of the data folder's shards with the hf refiner in a temporary
instance."""

import sys

import dagster as dg

from prox_dagster import definitions
from prox_dagster.resources import CheckThresholds, RefinerResource


def build(data_dir: str, model: str) -> dg.Definitions:
    lenient = CheckThresholds(min_doc_parse_rate=0, min_chunk_parse_rate=0,
                              min_token_retention=0, min_kept_share=0)
    return definitions.build_definitions(
        data_dir=data_dir, checks=lenient,
        refiner=RefinerResource(backend="hf", doc_model=model, batch_size=2,
                                max_chunk_tokens=200))


def materialize(defs: dg.Definitions, instance: dg.DagsterInstance):
    keys = definitions.register_new_shards(defs, instance)
    return definitions.materialize_shards(defs, instance, keys[0], keys[-1])


if __name__ == "__main__":
    with dg.instance_for_test() as instance:
        materialize(build(sys.argv[1], sys.argv[2]), instance)
