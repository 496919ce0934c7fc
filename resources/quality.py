"""Thresholds of the data-quality checks."""

import dagster as dg

from prox_dagster.quality import Thresholds


class CheckThresholds(dg.ConfigurableResource):
    """Bounds of the blocking checks: a shard outside them stops before the next stage."""

    min_doc_parse_rate: float = 0.9
    min_chunk_parse_rate: float = 0.9
    min_token_retention: float = 0.05
    max_token_retention: float = 1.05

    def thresholds(self) -> Thresholds:
        return Thresholds(self.min_doc_parse_rate, self.min_chunk_parse_rate,
                          self.min_token_retention, self.max_token_retention)
