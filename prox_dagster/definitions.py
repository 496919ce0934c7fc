"""The composition root: the only engine module that imports Dagster, assets and resources.

Configuration comes from the environment, so local and production runs differ by settings only:

=========================  ==========================================  ======================
variable                   meaning                                     default
=========================  ==========================================  ======================
``PROX_DATA_DIR``          base folder of every asset's Parquet         ``./.prox_data``
``PROX_RAW_DIR``           folder the sensor watches for raw shards     ``$PROX_DATA_DIR/raw``
``PROX_TOKENIZER``         HF tokenizer folder or hub id                ``sample`` (offline)
``PROX_MAX_CHUNK_TOKENS``  chunk budget in tokens                       ``1500``
``PROX_REFINER_BACKEND``   refiner backend                              ``rules``
``PROX_REFINER_BATCH``     prompts per refiner call                     ``256``
=========================  ==========================================  ======================

The refiner is resolved here, at load time, because its version fingerprint is the code version
of the refiner-dependent assets: reloading the code location with another refiner marks exactly
the shards it did not produce as stale.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from assets import JOBS, SENSORS, build_assets
from resources import (CheckThresholds, ProgramPolicy, RawSource, RefinerResource, ShardStorage,
                       TokenizerResource)


def build_definitions(*, data_dir: str | os.PathLike | None = None,
                      raw_dir: str | os.PathLike | None = None,
                      tokenizer: str | None = None,
                      max_chunk_tokens: int | None = None,
                      refiner: RefinerResource | None = None,
                      policy: ProgramPolicy | None = None,
                      checks: CheckThresholds | None = None) -> dg.Definitions:
    env = os.environ
    data = Path(data_dir or env.get("PROX_DATA_DIR", "./.prox_data")).resolve()
    raw = Path(raw_dir or env.get("PROX_RAW_DIR", data / "raw")).resolve()
    refiner = refiner or RefinerResource(backend=env.get("PROX_REFINER_BACKEND", "rules"),
                                         batch_size=int(env.get("PROX_REFINER_BATCH", "256")))
    policy = policy or ProgramPolicy()
    resources = {
        "storage": ShardStorage(base=str(data)),
        "raw_source": RawSource(path=str(raw)),
        "tokenizer": TokenizerResource(
            name_or_path=tokenizer or env.get("PROX_TOKENIZER", "sample"),
            max_chunk_tokens=max_chunk_tokens or int(env.get("PROX_MAX_CHUNK_TOKENS", "1500"))),
        "refiner": refiner,
        "policy": policy,
        "checks": checks or CheckThresholds(),
    }
    return dg.Definitions(
        assets=build_assets(refiner.version, policy.version),
        jobs=JOBS,
        sensors=SENSORS,
        resources=resources,
    )


defs = build_definitions()
