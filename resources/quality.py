"""Thresholds of the data-quality checks (fields, defaults and validation: ``Thresholds``)."""

import dagster as dg

from prox_dagster.quality import Thresholds


class CheckThresholds(dg.ConfigurableResource, Thresholds):
    """Bounds of the blocking checks: a shard outside them stops before the next stage."""

    def settings(self) -> Thresholds:
        return Thresholds(**{name: getattr(self, name) for name in Thresholds.model_fields})
