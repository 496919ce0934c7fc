"""The Dagster UI as a user sees it: start `dagster dev` on a fresh instance with a small sample
crawl, launch a backfill through the UI's GraphQL API, wait for it, and screenshot the asset
graph, a partition's metadata, the checks and the backfill in headless Chromium.

    python scripts/ui_tour.py --out docs/screenshots [--shards 4] [--shards-per-run 2]

Prints a JSON summary (backfill id and status, runs, materialized partitions, screenshots).
Needs Debian's `chromium` for the screenshots (`--no-screenshots` to skip them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GRAPH_ASSETS = ["raw_shard", "doc_refined_shard", "chunked_shard", "chunk_refined_shard",
                "clean_shard", "tokenized_shard"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


def wait_for_server(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5):
                # the code location loads after the server answers
                data = graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries {"
                                    " locationOrLoadError { __typename } } } } }")
                entries = data["workspaceOrError"]["locationEntries"]
                if entries and all(e["locationOrLoadError"] and
                                   e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                                   for e in entries):
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"dagster dev did not come up at {url} in {timeout:.0f}s")


LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on PartitionSetNotFoundError { message }
  }
}"""

STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status numPartitions }
    ... on PythonError { message }
  }
}"""

LAUNCH_RUN = """
mutation LaunchRun($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""

RUN_STATUS = """
query RunStatus($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""

LATEST_METADATA = """
query Latest($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode {
      assetMaterializations(limit: 1) {
        metadataEntries {
          label
          ... on MarkdownMetadataEntry { mdStr }
          ... on TextMetadataEntry { text }
          ... on FloatMetadataEntry { floatValue }
          ... on IntMetadataEntry { intValue }
          ... on PathMetadataEntry { path }
        }
      }
    }
  }
}"""

RUNS = """
query Runs($id: String!) {
  runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}"""


def screenshot(url: str, path: Path, budget_ms: int = 20000, height: int = 950) -> Path:
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--window-size=1500,{height}",
             f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", url],
            check=True, capture_output=True, timeout=180)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return path


def evaluate_from_ui(url: str, location: str, timeout: float = 300) -> dict:
    """Launch ``refiner_evaluation_job`` as the UI's Materialize button does, wait for it, and
    read back what the UI shows of the result: its status and the materialization's metadata."""
    launched = graphql(url, LAUNCH_RUN, {"params": {
        "selector": {"repositoryLocationName": location, "repositoryName": "__repository__",
                     "jobName": "refiner_evaluation_job"},
        "runConfigData": {}}})["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"evaluation run not launched: {launched}")
    run_id = launched["run"]["runId"]
    started = time.monotonic()
    status = None
    while time.monotonic() - started < timeout:
        status = graphql(url, RUN_STATUS, {"id": run_id})["runOrError"].get("status")
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    node = graphql(url, LATEST_METADATA, {"path": ["refiner_evaluation"]})["assetNodeOrError"]
    entries = (node.get("assetMaterializations") or [{}])[0].get("metadataEntries", [])
    metadata = {e["label"]: next((e[k] for k in ("mdStr", "text", "floatValue", "intValue", "path")
                                  if k in e), None) for e in entries}
    return {"run_id": run_id, "status": status, "metadata": metadata}


def tour(out: Path, shards: int, shards_per_run: int, screenshots: bool = True) -> dict:
    from prox_dagster import definitions
    from prox_dagster.sample import write_sample_crawl

    work = Path(tempfile.mkdtemp(prefix="prox-ui-"))
    home, data = work / "dagster_home", work / "data"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    write_sample_crawl(data, n_shards=shards, docs_per_shard=6)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PROX_DATA_DIR": str(data),
           "PROX_SHARDS_PER_RUN": str(shards_per_run), "DAGSTER_DISABLE_TELEMETRY": "1"}
    os.environ.update({k: env[k] for k in ("DAGSTER_HOME", "PROX_DATA_DIR",
                                           "PROX_SHARDS_PER_RUN")})
    defs = definitions.build_definitions()
    instance = definitions.current_instance()
    keys = definitions.register_new_shards(defs, instance)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dagster = str(Path(sys.executable).parent / "dagster")
    # dagster dev in a non-interactive session ignores SIGTERM: its own session, default SIGINT
    process = subprocess.Popen(
        ["setsid", "env", "--default-signal=INT", dagster, "dev", "-w", "workspace.yaml",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=open(work / "dagster_dev.log", "wb"),
        stderr=subprocess.STDOUT)
    try:
        wait_for_server(url, process)
        graphql(url, "mutation { setNuxSeen }")
        started = time.monotonic()
        launched = graphql(url, LAUNCH, {"params": {
            "assetSelection": [{"path": [a]} for a in GRAPH_ASSETS],
            "partitionNames": keys, "title": "ui tour backfill"}})["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {launched}")
        backfill = launched["backfillId"]
        status = None
        while time.monotonic() - started < 600:
            status = graphql(url, STATUS, {"id": backfill})["partitionBackfillOrError"]
            if status.get("status") not in (None, "REQUESTED", "CANCELING", "FAILING"):
                break
            time.sleep(2)
        elapsed = time.monotonic() - started
        runs = graphql(url, RUNS, {"id": backfill})["runsOrError"]["results"]
        materialized = {asset: sorted(instance.get_materialized_partitions(
            definitions.dg.AssetKey(asset))) for asset in GRAPH_ASSETS}
        location = graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries {"
                                " name } } } }")["workspaceOrError"]["locationEntries"][0]
        evaluation = evaluate_from_ui(url, location["name"])
        shots = {}
        if screenshots:
            out.mkdir(parents=True, exist_ok=True)
            shard = keys[-1]
            pages = {
                "asset_graph": f"{url}/locations/{location['name']}/asset-groups/refine/lineage",
                "partition_metadata": f"{url}/assets/clean_shard?view=partitions"
                                      f"&partition={shard}",
                "checks": f"{url}/assets/clean_shard?view=checks",
                "backfill": f"{url}/runs/b/{backfill}?tab=runs",
                "refiner_evaluation": f"{url}/assets/refiner_evaluation",
            }
            shots = {name: str(screenshot(page, out / f"{name}.png"))
                     for name, page in pages.items()}
            # tall enough to reach the refinement preview below the shard's numbers
            shots["refinement_preview"] = str(screenshot(
                pages["partition_metadata"], out / "refinement_preview.png", height=1300))
        return {"url": url, "backfill_id": backfill, "status": status.get("status"),
                "seconds": round(elapsed, 1), "partitions": keys,
                "runs": [{"run_id": r["runId"], "status": r["status"],
                          "range": [t["value"] for t in r["tags"] if t["key"] in (
                              "dagster/asset_partition_range_start",
                              "dagster/asset_partition_range_end")]} for r in runs],
                "materialized": materialized, "screenshots": shots, "evaluation": evaluation,
                "log": str(work / "dagster_dev.log")}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--shards-per-run", type=int, default=2)
    parser.add_argument("--no-screenshots", action="store_true")
    args = parser.parse_args()
    summary = tour(args.out, args.shards, args.shards_per_run, not args.no_screenshots)
    print(json.dumps(summary, indent=2))
    return 0 if summary["status"] == "COMPLETED_SUCCESS" or summary["status"] == "COMPLETED" \
        else 1


if __name__ == "__main__":
    sys.exit(main())
