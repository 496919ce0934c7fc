"""One partition per raw shard file."""

import dagster as dg

shards_partitions_def = dg.DynamicPartitionsDefinition(name="shards")
