"""Run the benchmarks (all, or those named); print and write benchmarks/results/*.json."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_ablation  # noqa: E402
import bench_cached_run  # noqa: E402
import bench_memory  # noqa: E402
import bench_chunking  # noqa: E402
import bench_orchestration  # noqa: E402
import bench_programs  # noqa: E402
import bench_quality  # noqa: E402
import bench_refiners  # noqa: E402
import bench_run_storage  # noqa: E402
import bench_scale  # noqa: E402
import bench_tokenize  # noqa: E402
import report  # noqa: E402

from prox_dagster.atomic_writes import write_text_atomic  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    machine = {"python": platform.python_version(), "machine": platform.machine(),
               "processor": platform.processor() or "unknown"}
    ok = True
    names = sys.argv[1:] or ["chunking", "parse_execute", "refiners_cpu", "tokenize",
                             "orchestration", "cached_run", "quality", "memory", "scale",
                             "run_storage", "ablation"]
    benches = {"chunking": bench_chunking, "parse_execute": bench_programs,
               "refiners_cpu": bench_refiners, "tokenize": bench_tokenize,
               "orchestration": bench_orchestration, "cached_run": bench_cached_run,
               "quality": bench_quality, "memory": bench_memory, "scale": bench_scale,
               "run_storage": bench_run_storage, "ablation": bench_ablation}
    for name in names:
        result = {**benches[name].run(), "machine": machine}
        print(json.dumps(result, indent=2))
        write_text_atomic(json.dumps(result, indent=2) + "\n", RESULTS / f"{name}.json")
        # the targets: identical results to the baseline where it is well defined, and speed
        if name == "quality":
            # the targets are reported (see README); the speed target gates the run
            ok &= bool(result.get("skipped")) or result["targets"]["1000_docs_under_60s"]
        elif name == "ablation":
            # whether refining helps is reported as measured (docs/ablation.md); time gates
            ok &= bool(result.get("skipped")) or result["targets"]["under_15_minutes"]
        elif name == "refiners_cpu":
            ok &= result["cases"]["tiny"]["vllm_over_hf"] >= 2.0  # 0.35B: reported, see README
        elif name == "memory":
            ok &= result["targets"]["peak_rss_at_most_2_gib"]
            ok &= result["targets"]["cost_per_doc_flat"]
        elif name == "scale":
            # what a pass costs (pass_costs) is reported: Dagster's own events per shard and
            # stage set a cached run's floor (docs/operations.md), as they set the run storage's
            ok &= all(value for key, value in result["targets"].items() if key != "largest")
        elif name == "run_storage":
            # its targets are reported (docs/operations.md); every run succeeded (asserted)
            ok &= bool(result["results"])
        elif name == "orchestration":
            ok &= result["batched_speedup"] >= 2.0
        elif name == "cached_run":
            ok &= result["in_process"]["all_cached"] and result["in_process_speedup"] >= 5.0
        elif name == "tokenize":
            ok &= result["ours_over_ceiling"] >= 0.9 and result["ours_over_baseline"] >= 3.0
            ok &= result["memory_1gb_shard"]["peak_rss_mib"] < 2048
        else:
            ok &= bool(result.get("identical_chunks", result.get("canonical_identical")))
            ok &= result["speedup"] >= (3.0 if name == "chunking" else 1.0)
    report.write()  # every number in the docs comes from the results files, through this
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
