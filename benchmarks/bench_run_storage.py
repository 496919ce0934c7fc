"""What a pass over the corpus costs Dagster's run storage, per shard, and what a cached run of
16 shards takes, on SQLite (the local instance) and on PostgreSQL (production's).

For each storage: a fresh instance and the sample crawl of :data:`SHARDS` shards, registered.
A computed pass runs ``refine_shard_job`` over ranges of 16 shards, each run in a fresh
process that loads the code location and executes the run in process, as a run worker does;
then a cached pass runs the same ranges again (every shard current, every stage ``cached``).
Measured per pass and shard: the event log's JSON (the ``event`` column of every event row,
each event counted once) and the storage's growth on disk (SQLite: its files, which hold each
asset event twice, in the run's file and the index; PostgreSQL: ``pg_database_size``), and
both times 100,000 shards. The event log grows with the shards (a run's own events are a few
KB against 16 shards' hundreds), so a pass over 100,000 shards costs 100,000 times a shard's
share. The cached runs' seconds are the whole process: start, imports, loading the code
location, the run. PostgreSQL runs with ``fsync=off`` (a test server): its sizes are real, its
seconds a lower bound. On PostgreSQL the cached pass runs once more with
``DAGSTER_EVENT_BATCH_SIZE`` set (a step's materializations and a run's planned events in one
insert each). Last, the instance registers shard partitions up to 100,000 and one cached run of
16 shards runs again: Dagster lists a dynamic partition set to resolve a run's range, so that
run pays for the partitions it does not touch.

Targets: under 5 GB of event log per 100,000-shard pass; a cached 16-shard run under 5 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARDS = 32
PER_RUN = 16
CORPUS = 100_000
BATCH_SIZE = 1000  # DAGSTER_EVENT_BATCH_SIZE of the batched PostgreSQL pass
EVENT_LOG_GB, CACHED_RUN_S = 5.0, 5.0

RUN = """
import json, sys, time
started = time.perf_counter()
import dagster as dg
from prox_dagster import definitions
first, last = sys.argv[1], sys.argv[2]
with dg.DagsterInstance.get() as instance:
    defs = definitions.build_definitions()
    loaded = time.perf_counter()
    result = definitions.materialize_shards(defs, instance, first, last)
    cached = [e.materialization.metadata["cached"].value
              for e in result.get_asset_materialization_events()]
print(json.dumps({"success": result.success, "run_s": time.perf_counter() - loaded,
                  "load_s": loaded - started, "materializations": len(cached),
                  "cached": sum(cached)}))
"""


def _sqlite_size(home: Path) -> int:
    return sum(p.stat().st_size for p in home.rglob("*") if p.is_file() and p.suffix == ".db")


def _sqlite_json(home: Path) -> int:
    total = 0
    for db in (home / "history" / "runs").glob("*.db"):
        if db.name == "index.db":
            continue  # asset events again: each event once
        with sqlite3.connect(db) as con:
            total += con.execute("select coalesce(sum(length(event)), 0) from event_logs"
                                 ).fetchone()[0]
    return total


class _Storage:
    """An instance's home, and how to weigh its event log."""

    def __init__(self, kind: str, root: Path):
        self.kind, self.home, self.env = kind, root / f"home-{kind}", {}
        self.home.mkdir()
        self.postgres = None
        if kind == "sqlite":
            shutil.copy(ROOT / "dagster.yaml", self.home / "dagster.yaml")
            return
        sys.path.insert(0, str(ROOT / "tests"))
        from deployment import Postgres, postgres_bin

        self.postgres = Postgres(postgres_bin())
        self.env = self.postgres.env
        storage = {"postgres": {"postgres_db": {
            "hostname": "127.0.0.1", "port": self.postgres.port, "username": "dagster",
            "password": "unused-trust-auth", "db_name": "dagster",
            "scheme": "postgresql+psycopg2"}}}
        (self.home / "dagster.yaml").write_text(json.dumps(
            {"telemetry": {"enabled": False}, "storage": storage}))

    def _query(self, sql: str) -> int:
        import psycopg2

        with psycopg2.connect(host="127.0.0.1", port=self.postgres.port, user="dagster",
                              dbname="dagster") as con, con.cursor() as cursor:
            cursor.execute(sql)
            return int(cursor.fetchone()[0])

    def weigh(self) -> tuple[int, int]:
        """(event-log JSON bytes, bytes on disk)."""
        if self.postgres is None:
            return _sqlite_json(self.home), _sqlite_size(self.home)
        return (self._query("select coalesce(sum(length(event)), 0) from event_logs"),
                self._query("select pg_database_size(current_database())"))

    @contextlib.contextmanager
    def instance(self) -> Iterator:
        """The instance, opened in this process (its environment set while it is open)."""
        import dagster as dg

        env = {**self.env, "DAGSTER_HOME": str(self.home)}
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            with dg.DagsterInstance.get() as instance:
                yield instance
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def close(self) -> None:
        if self.postgres is not None:
            self.postgres.close()


def _pass(storage: _Storage, data: Path, keys: list[str], extra_env: dict | None = None) -> dict:
    env = {**os.environ, **storage.env, **(extra_env or {}), "DAGSTER_HOME": str(storage.home),
           "PROX_DATA_DIR": str(data), "PYTHONPATH": str(ROOT)}
    json_before, disk_before = storage.weigh()
    runs = []
    for start in range(0, len(keys), PER_RUN):
        batch = keys[start:start + PER_RUN]
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", RUN, batch[0], batch[-1]], env=env,
                             capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        run = json.loads(out.stdout.strip().splitlines()[-1])
        assert run["success"], run
        runs.append({**run, "seconds": round(time.perf_counter() - started, 2),
                     "run_s": round(run["run_s"], 2), "load_s": round(run["load_s"], 2)})
    json_after, disk_after = storage.weigh()
    per_shard_json = (json_after - json_before) / len(keys)
    per_shard_disk = (disk_after - disk_before) / len(keys)
    return {"runs": runs,
            "event_json_kb_per_shard": round(per_shard_json / 1024, 1),
            "disk_kb_per_shard": round(per_shard_disk / 1024, 1),
            "event_json_gb_per_100k": round(per_shard_json * CORPUS / 1e9, 2),
            "disk_gb_per_100k": round(per_shard_disk * CORPUS / 1e9, 2)}


def _register_more(storage: _Storage, n: int) -> None:
    """``n`` more shard partitions in the instance, as a crawl of 100,000 shards registers
    them: what a run pays for the partitions it does not touch (Dagster lists a dynamic
    partition set to resolve a run's partition range)."""
    names = [f"more-crawl.{i:06d}" for i in range(n)]
    with storage.instance() as instance:
        for start in range(0, n, 10_000):
            instance.add_dynamic_partitions("shards", names[start:start + 10_000])


def run(kinds: tuple[str, ...] = ("sqlite", "postgres")) -> dict:
    from prox_dagster import definitions
    from prox_dagster.sample import write_sample_crawl

    results = {}
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix=f"prox-run-storage-{kind}-") as tmp:
            root = Path(tmp)
            data = root / "data"
            write_sample_crawl(data, n_shards=SHARDS, docs_per_shard=12)
            storage = _Storage(kind, root)
            try:
                with storage.instance() as instance:
                    keys = definitions.register_new_shards(
                        definitions.build_definitions(data_dir=data), instance)
                computed = _pass(storage, data, keys)
                cached = _pass(storage, data, keys)
                assert all(r["cached"] == r["materializations"] for r in cached["runs"])
                batched = None
                if storage.postgres is not None:
                    # dagster-postgres writes a step's asset events in one insert when asked
                    batched = _pass(storage, data, keys,
                                    {"DAGSTER_EVENT_BATCH_SIZE": str(BATCH_SIZE)})
                _register_more(storage, CORPUS - len(keys))
                at_scale = _pass(storage, data, keys[:PER_RUN])
                assert at_scale["runs"][0]["cached"] == at_scale["runs"][0]["materializations"]
                results[kind] = {"computed_pass": computed, "cached_pass": cached,
                                 **({"cached_pass_batched": batched} if batched else {}),
                                 "cached_run_100k_registered": at_scale["runs"][0]}
            finally:
                storage.close()
            print(f"{kind}: {json.dumps(results[kind])}", file=sys.stderr)
    worst = max(results[k][p]["event_json_gb_per_100k"] for k in results
                for p in ("computed_pass", "cached_pass"))
    slowest = max(max(r["seconds"] for r in results[k]["cached_pass"]["runs"])
                  for k in results)
    at_scale = max(results[k]["cached_run_100k_registered"]["seconds"] for k in results)
    return {"benchmark": "run_storage", "shards": SHARDS, "shards_per_run": PER_RUN,
            "results": results,
            "targets": {"event_log_under_5_gb_per_100k_pass": worst < EVENT_LOG_GB,
                        "cached_16_shard_run_under_5_s": slowest < CACHED_RUN_S,
                        "cached_16_shard_run_under_5_s_with_100k_registered":
                            at_scale < CACHED_RUN_S},
            "event_json_gb_per_100k_worst": worst, "cached_run_s_slowest": slowest,
            "cached_run_s_100k_registered_slowest": at_scale}


def render(result: dict) -> str:
    """The docs' table of ``result`` (``benchmarks/results/run_storage.json``)."""
    lines = ["| storage | pass | event log JSON, KB per shard | on disk, KB per shard | "
             "event log per 100k shards, GB | on disk per 100k shards, GB | runs of 16: "
             "seconds (load, run) |", "|" + "---|" * 7]
    for kind, passes in result["results"].items():
        for name in ("computed_pass", "cached_pass", "cached_pass_batched"):
            if name not in passes:
                continue
            p = passes[name]
            runs = ", ".join(f"{r['seconds']:.1f} ({r['load_s']:.1f}, {r['run_s']:.1f})"
                             for r in p["runs"])
            lines.append(f"| {kind} | {name.replace('_', ' ')} | "
                         f"{p['event_json_kb_per_shard']} | {p['disk_kb_per_shard']} | "
                         f"{p['event_json_gb_per_100k']} | {p['disk_gb_per_100k']} | {runs} |")
    targets = result["targets"]
    lines += ["", f"{result['shards']} sample shards in runs of {result['shards_per_run']}, each "
              "run a fresh process (seconds: the whole process; load: imports and the code "
              "location); batched: with `DAGSTER_EVENT_BATCH_SIZE` set. Targets: event log "
              "under 5 GB per 100,000-shard pass: "
              f"{'yes' if targets['event_log_under_5_gb_per_100k_pass'] else '**no**'} "
              f"(worst {result['event_json_gb_per_100k_worst']} GB); a cached 16-shard run "
              f"under 5 s: {'yes' if targets['cached_16_shard_run_under_5_s'] else '**no**'} "
              f"(slowest {result['cached_run_s_slowest']} s)."]
    scaled = {kind: passes["cached_run_100k_registered"]
              for kind, passes in result["results"].items()
              if "cached_run_100k_registered" in passes}
    if scaled:
        lines += ["", "The same cached run of 16 shards once the instance holds 100,000 shard "
                  "partitions: " + "; ".join(
                      f"{kind} {r['seconds']:.1f} s (load {r['load_s']:.1f}, run "
                      f"{r['run_s']:.1f})" for kind, r in scaled.items()) + ". Under 5 s: "
                  + ("yes" if result["targets"].get(
                      "cached_16_shard_run_under_5_s_with_100k_registered") else "**no**")
                  + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(json.dumps(run(tuple(sys.argv[1:]) or ("sqlite", "postgres")), indent=2))
