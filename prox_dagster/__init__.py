"""prox-dagster: ProX-style pre-training data refinement as a Dagster asset graph.

The engine modules here are plain Python; only :mod:`prox_dagster.definitions` imports Dagster.
"""

__version__ = "0.1.0"
