"""Memory and cost per document of every stage, from 1k documents per shard to a 1 GB shard.

Each stage runs as a step in its own process (the asset, materialized for one shard through
Dagster with the default ``classifier`` refiner, as a run worker runs it), so its peak resident
memory (``VmHWM``) is the step's alone. The cost per document is the step's own ``duration_s``
(the shard's work, without the process start) over the shard's raw documents.

Targets (issue 14): peak RSS at most 2 GiB in every step of the 1 GB shard, and the cost per
document flat from 1k to 100k documents (``cost_ratio_100k_over_1k`` near 1). The baseline is
the same code on the smallest shard in the same run: a stage that held its shard would show a
peak that grows with it (``rss_ratio_largest_over_smallest``).

    python benchmarks/bench_memory.py [--gib 1.0] [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = ["raw_shard", "doc_refined_shard", "chunked_shard", "chunk_refined_shard",
          "clean_shard", "tokenized_shard"]
SHARD = "bench.00000"
LIMIT_GIB = 2.0


def write_raw_shard(folder: Path, n_docs: int | None = None, n_bytes: int | None = None) -> dict:
    """A JSON-lines raw shard of sample-crawl documents: ``n_docs`` of them, or as many as
    make ``n_bytes`` of file. Written as generated: the generator holds one block at a time."""
    from prox_dagster.sample import sample_documents

    path = folder / "raw" / f"{SHARD}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    docs = written = block = 0
    with open(path, "w", encoding="utf-8") as out:
        while (n_docs is None or docs < n_docs) and (n_bytes is None or written < n_bytes):
            want = 2000 if n_docs is None else min(2000, n_docs - docs)
            for doc in sample_documents(want, seed=block, shard=f"b{block}"):
                line = json.dumps({"id": doc.id, "text": doc.text, "url": doc.url}) + "\n"
                out.write(line)
                written += len(line.encode())
                docs += 1
                if n_bytes is not None and written >= n_bytes:
                    break
            block += 1
    return {"documents": docs, "bytes": written}


def step(data: str, home: str, stage: str) -> dict:
    """One stage for the shard, in this process; what it cost."""
    import dagster as dg

    from prox_dagster import definitions

    defs = definitions.build_definitions(data_dir=data)
    with dg.DagsterInstance.local_temp(tempdir=home) as instance:
        if stage == STAGES[0]:
            definitions.register_new_shards(defs, instance)
        job = defs.resolve_job_def("refine_shard_job")
        started = time.perf_counter()
        result = job.execute_in_process(partition_key=SHARD, instance=instance,
                                        asset_selection=[dg.AssetKey(stage)],
                                        run_config=definitions.QUIET, raise_on_error=False)
        wall = time.perf_counter() - started
        metadata = definitions.latest_metadata(instance, stage, SHARD)
    status = Path("/proc/self/status").read_text()
    peak_kib = int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("VmHWM:")))
    return {"stage": stage, "success": result.success, "duration_s": metadata.get("duration_s"),
            "wall_s": round(wall, 2), "rows_in": metadata.get("rows_in"),
            "peak_rss_gib": round(peak_kib / 2**20, 3)}


def _baseline_rss(data: str) -> float:
    """Peak RSS of a process that loads the code location and builds the refiner, no stage."""
    code = ("import sys; sys.path.insert(0, '.');"
            "from prox_dagster import definitions;"
            f"definitions.build_definitions(data_dir={data!r});"
            "from pathlib import Path;"
            "print([l for l in Path('/proc/self/status').read_text().splitlines()"
            " if l.startswith('VmHWM:')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    return round(int(out.stdout.strip().splitlines()[-1]) / 2**20, 3)


def shard_run(n_docs: int | None = None, n_bytes: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="prox-bench-memory-") as tmp:
        data, home = Path(tmp) / "data", Path(tmp) / "home"
        home.mkdir()
        shard = write_raw_shard(data, n_docs, n_bytes)
        stages = {}
        for stage in STAGES:
            out = subprocess.run([sys.executable, __file__, "--step", str(data), str(home),
                                  stage], capture_output=True, text=True,
                                 cwd=Path(__file__).resolve().parent.parent)
            if out.returncode != 0:
                raise RuntimeError(f"{stage} failed:\n{out.stderr[-3000:]}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if not result["success"]:
                raise RuntimeError(f"{stage} failed on {shard}: {out.stderr[-3000:]}")
            result["us_per_doc"] = round(1e6 * result["duration_s"] / shard["documents"], 1)
            stages[stage] = result
            print(f"  {shard['documents']} docs, {stage}: {result}", file=sys.stderr, flush=True)
        return {**shard, "stages": stages,
                "us_per_doc": round(sum(s["us_per_doc"] for s in stages.values()), 1),
                "peak_rss_gib": max(s["peak_rss_gib"] for s in stages.values())}


def run(sizes: tuple[int, ...] = (1000, 10000, 100000), gib: float | None = 1.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        baseline = _baseline_rss(tmp)
    by_docs = {str(n): shard_run(n_docs=n) for n in sizes}
    result = {"benchmark": "memory", "refiner": "classifier (default)",
              "baseline_process_rss_gib": baseline, "by_documents": by_docs}
    small, large = by_docs[str(min(sizes))], by_docs[str(max(sizes))]
    result["cost_ratio_largest_over_smallest"] = {
        stage: round(large["stages"][stage]["us_per_doc"]
                     / max(small["stages"][stage]["us_per_doc"], 1e-9), 2)
        for stage in STAGES}
    result["cost_ratio_total"] = round(large["us_per_doc"] / small["us_per_doc"], 2)
    biggest = large
    if gib:
        biggest = result["one_gb_shard"] = shard_run(n_bytes=int(gib * 1e9))
    result["rss_ratio_largest_over_smallest"] = {
        stage: round(biggest["stages"][stage]["peak_rss_gib"]
                     / small["stages"][stage]["peak_rss_gib"], 2) for stage in STAGES}
    result["peak_rss_gib_by_stage"] = {stage: biggest["stages"][stage]["peak_rss_gib"]
                                       for stage in STAGES}
    result["targets"] = {
        "peak_rss_at_most_2_gib": all(v <= LIMIT_GIB
                                      for v in result["peak_rss_gib_by_stage"].values()),
        "shard_bytes": biggest["bytes"],
        "cost_per_doc_flat": result["cost_ratio_total"] <= 1.5,
    }
    return result


def main() -> int:
    """``--step``: one stage in this process (what :func:`shard_run` starts); otherwise the
    benchmark on its own (``benchmarks/run.py memory`` runs it with the others)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--step", nargs=3, metavar=("DATA", "HOME", "STAGE"))
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"
                                             / "memory.json"))
    args = parser.parse_args()
    if args.step:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        print(json.dumps(step(*args.step)))
        return 0
    result = run(tuple(int(s) for s in args.sizes.split(",")), args.gib or None)
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(v for k, v in result["targets"].items() if k != "shard_bytes") else 1


if __name__ == "__main__":
    sys.exit(main())
