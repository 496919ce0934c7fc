"""The shard stage graph, declared once: each stage's inputs, in graph order.

The assets' dependencies, the refine job, fingerprints, staleness, the catalog and the lineage
audit all read it, so a stage added or rewired here is rewired everywhere."""

RAW_INPUT = "raw"  # the crawl file a raw shard is read from

STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "raw_shard": (RAW_INPUT,),
    "doc_refined_shard": ("raw_shard",),
    "chunked_shard": ("doc_refined_shard",),
    "chunk_refined_shard": ("chunked_shard",),
    "clean_shard": ("doc_refined_shard", "chunk_refined_shard"),
    "tokenized_shard": ("clean_shard",),
}
STAGES = list(STAGE_INPUTS)
# The stages whose rows the refiner writes, by the program level they hold
REFINERS = {"doc": "doc_refined_shard", "chunk": "chunk_refined_shard"}


def upstream(stage: str) -> list[str]:
    """The stages ``stage`` reads (its inputs less the crawl file)."""
    return [name for name in STAGE_INPUTS[stage] if name != RAW_INPUT]
