"""Jobs: refine one shard through every partitioned stage; rebuild the pre-training set."""

import dagster as dg

from prox_dagster.stages import STAGES


# The executor is the code location's (PROX_EXECUTOR, in-process by default: the refiner resource
# and its model are built once and serve both the doc and the chunk step).
refine_shard_job = dg.define_asset_job(
    "refine_shard_job", selection=dg.AssetSelection.assets(*STAGES),
    description="Every partitioned stage of one shard, raw to tokenized.")

pretraining_set_job = dg.define_asset_job(
    "pretraining_set_job", selection=dg.AssetSelection.assets("pretraining_set"),
    description="Rebuild the pre-training manifest from all tokenized shards.")

lineage_audit_job = dg.define_asset_job(
    "lineage_audit_job", selection=dg.AssetSelection.assets("lineage_audit"),
    description="Which refiner produced every shard, with check results and staleness.")

refiner_evaluation_job = dg.define_asset_job(
    "refiner_evaluation_job", selection=dg.AssetSelection.assets("refiner_evaluation"),
    description="Score the loaded refiner on the labelled evaluation sets.")

classifier_model_job = dg.define_asset_job(
    "classifier_model_job", selection=dg.AssetSelection.assets("classifier_model"),
    description="Train the classifier refiner on the labelled training sets.")

ablation_job = dg.define_asset_job(
    "ablation_job", selection=dg.AssetSelection.assets("ablation"),
    description="Train the same small LM on the raw, naive and refined text of the set's shards "
                "and compare their loss on held-out clean text.")
