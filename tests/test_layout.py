"""The architecture's one-way dependency rule, enforced."""

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "prox_dagster"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_engine_imports_no_dagster_assets_or_resources_outside_the_composition_root():
    offenders = {}
    for path in ENGINE.rglob("*.py"):
        if path.name == "definitions.py":
            continue
        bad = imported_modules(path) & {"dagster", "dagster_aws", "assets", "resources"}
        if bad:
            offenders[str(path.relative_to(ENGINE))] = sorted(bad)
    assert offenders == {}


def test_no_eval_or_exec_in_the_engine():
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec", "compile"}, path


def test_the_scale_numbers_in_the_docs_are_the_benchmark_results():
    """docs/operations.md's table is rendered from benchmarks/results/scale.json, never typed."""
    import json

    from benchmarks.bench_scale import DOCS, MARKER, render

    results = ENGINE.parent / "benchmarks" / "results" / "scale.json"
    shown = DOCS.read_text().split(MARKER)[1].strip()
    assert shown == render(json.loads(results.read_text()))


def test_the_caps_the_docs_state_are_the_caps_in_the_code():
    from prox_dagster import shards
    from prox_dagster.quality import RETENTION_DOCUMENT_CAP
    from prox_dagster.tokenization import BATCH_CHARS
    from resources import RawSource

    docs = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    stated = {"64 MiB, quarantined by its first 4 KiB":
              shards.MAX_RECORD_BYTES == 64 << 20 and shards.QUARANTINED_HEAD == 4096,
              "| 8 GiB, then": RawSource().max_shard_bytes == 8 << 30,
              "| 10 million, likewise": RawSource().max_shard_lines == 10_000_000,
              "| 1,000,001 (": shards.MAX_DOCUMENT_LINES == 1_000_001,
              "2 MiB of characters": BATCH_CHARS == 2 << 20,
              "| 32,768 tokens": RETENTION_DOCUMENT_CAP == 32_768,
              "| 239 bytes: its longest": shards.MAX_KEY_BYTES == 239}
    for text, true in stated.items():
        assert text in docs and true, text
