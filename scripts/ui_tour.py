"""The Dagster UI as a user sees it: start `dagster dev` on a fresh instance with a small sample
crawl, launch a backfill through the UI's GraphQL API, wait for it, and screenshot the asset
graph, a partition's metadata, the checks and the backfill in headless Chromium; then restart
`dagster dev` with another chunk budget, run the lineage audit from the UI's API, and read what
the asset graph and the `current` check show of the shards that setting made stale.

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


def chromium(url: str, *args: str, budget_ms: int = 20000, height: int = 950) -> str:
    """Render ``url`` in headless Chromium (``args``: what to produce); its stdout."""
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", f"--window-size=1500,{height}",
             f"--virtual-time-budget={budget_ms}", *args, url],
            check=True, capture_output=True, text=True, timeout=180).stdout
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(url: str, path: Path, budget_ms: int = 20000, height: int = 950) -> Path:
    chromium(url, f"--screenshot={path}", budget_ms=budget_ms, height=height)
    return path


CLICK_AND_READ = """(async () => {
  const until = async (test) => { for (let i = 0; i < 150; i++) {
    const found = test(); if (found) return found; await new Promise(r => setTimeout(r, 200)); } };
  // the last tab with that label: a check's own tabs come after the asset's (none: read only)
  if (TAB !== null) {
    const tab = await until(() => [...document.querySelectorAll(SELECTOR)]
      .filter(e => e.textContent.trim() === TAB).slice(COUNT - 1)[0]);
    if (!tab) return 'no tab ' + TAB;
    tab.click();
  }
  // the body is null for a moment while the app redirects: wait it out, never read it then
  const text = () => (document.body ? document.body.innerText : '');
  await until(() => text().includes(WAIT_FOR));
  await new Promise(r => setTimeout(r, 1500));
  return text();
})()"""


def click_and_read(url: str, tab: str | None, wait_for: str, shot: Path | None = None,
                   height: int = 950, count: int = 1,
                   selector: str = "button, [role=tab], a") -> str:
    """Open ``url`` in headless Chromium, click the ``count``-th tab labelled ``tab`` as a user
    would (once that many show; 0: the last, the innermost of nested ones; None: click
    nothing), among the elements ``selector`` matches, and return the page's text once
    ``wait_for`` shows (and a screenshot to ``shot``), driven over the DevTools protocol."""
    import base64

    from websockets.sync.client import connect

    port = free_port()
    profile = tempfile.mkdtemp(prefix="chromium-")
    browser = subprocess.Popen(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", f"--user-data-dir={profile}",
         f"--window-size=1500,{height}", f"--remote-debugging-port={port}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                pages = json.loads(urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/json/list", timeout=2).read())
                page = next(p for p in pages if p["type"] == "page")
                break
            except (OSError, StopIteration, ValueError):
                time.sleep(0.2)
        with connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
            def call(method, **params):
                ident = call.next = getattr(call, "next", 0) + 1
                ws.send(json.dumps({"id": ident, "method": method, "params": params}))
                while True:
                    reply = json.loads(ws.recv(timeout=120))
                    if reply.get("id") == ident:
                        if "error" in reply:
                            raise RuntimeError(f"{method}: {reply['error']}")
                        return reply["result"]

            script = CLICK_AND_READ.replace("SELECTOR", json.dumps(selector)).replace(
                "TAB", json.dumps(tab)).replace(
                "WAIT_FOR", json.dumps(wait_for)).replace("COUNT", str(count))
            for attempt in range(10):  # the app may still be navigating (redirects) at first
                try:
                    result = call("Runtime.evaluate", expression=script, awaitPromise=True,
                                  returnByValue=True)
                    break
                except RuntimeError as exc:
                    if "context was destroyed" not in str(exc) or attempt == 9:
                        raise
                    time.sleep(1)
            text = result.get("result", {}).get("value")
            if not isinstance(text, str):
                raise RuntimeError(f"{url}: could not read the {tab!r} tab: {result}")
            if shot is not None:
                shot.write_bytes(base64.b64decode(call("Page.captureScreenshot")["data"]))
            return text
    finally:
        browser.kill()
        browser.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


CHECKS = """query Checks($path: [String!]!) {
  assetNodes(assetKeys: [{path: $path}]) { assetChecksOrError { ... on AssetChecks { checks {
    name partitionStatuses { ... on AssetCheckDefaultPartitionStatuses {
      succeededPartitions failedPartitions inProgressPartitions skippedPartitions
      executionFailedPartitions } } } } } }
}"""


def check_statuses(url: str) -> dict[str, dict[str, list[str]]]:
    """What each shard check's Partitions tab shows, asked of the UI's GraphQL API:
    ``{"asset:check": {"succeeded": [...], "failed": [...], ...}}``."""
    statuses = {}
    for asset in GRAPH_ASSETS:
        for node in graphql(url, CHECKS, {"path": [asset]})["assetNodes"]:
            for check in node["assetChecksOrError"].get("checks", []):
                shown = check["partitionStatuses"] or {}
                statuses[f"{asset}:{check['name']}"] = {
                    key.removesuffix("Partitions"): sorted(value)
                    for key, value in shown.items()}
    return statuses


def materialize_from_ui(url: str, location: str, asset: str, run_config: dict | None = None,
                        timeout: float = 300) -> dict:
    """Launch ``{asset}_job`` with ``run_config`` as the UI's Materialize button (or its
    launchpad) does, wait for it, and read back what the UI shows of the result: its status and
    the materialization's metadata."""
    launched = graphql(url, LAUNCH_RUN, {"params": {
        "selector": {"repositoryLocationName": location, "repositoryName": "__repository__",
                     "jobName": f"{asset}_job"},
        "runConfigData": run_config or {}}})["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise RuntimeError(f"{asset} run not launched: {launched}")
    run_id = launched["run"]["runId"]
    started = time.monotonic()
    status = None
    while time.monotonic() - started < timeout:
        status = graphql(url, RUN_STATUS, {"id": run_id})["runOrError"].get("status")
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    node = graphql(url, LATEST_METADATA, {"path": [asset]})["assetNodeOrError"]
    entries = (node.get("assetMaterializations") or [{}])[0].get("metadataEntries", [])
    metadata = {e["label"]: next((e[k] for k in ("mdStr", "text", "floatValue", "intValue", "path")
                                  if k in e), None) for e in entries}
    return {"run_id": run_id, "status": status, "metadata": metadata}


def start_dev(env: dict, work: Path, port: int) -> subprocess.Popen:
    """``dagster dev`` on ``port`` in its own session (in a non-interactive session it ignores
    SIGTERM: SIGINT stops it)."""
    dagster = str(Path(sys.executable).parent / "dagster")
    return subprocess.Popen(
        ["setsid", "env", "--default-signal=INT", dagster, "dev", "-w", "workspace.yaml",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=open(work / "dagster_dev.log", "ab"),
        stderr=subprocess.STDOUT)


def stop_dev(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def tour(out: Path, shards: int, shards_per_run: int, screenshots: bool = True) -> dict:
    from prox_dagster import definitions
    from prox_dagster.sample import write_sample_crawl

    work = Path(tempfile.mkdtemp(prefix="prox-ui-"))
    home, data = work / "dagster_home", work / "data"
    home.mkdir()
    shutil.copyfile(ROOT / "dagster.yaml", home / "dagster.yaml")
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
    process = start_dev(env, work, port)
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
        evaluation = materialize_from_ui(url, location["name"], "refiner_evaluation")
        # the classifier trained from the UI with its trade-off set in the launchpad's config
        training = materialize_from_ui(url, location["name"], "classifier_model", {
            "ops": {"classifier_model": {"config": {"preset": "precision"}}}})
        # does refining help? the pre-training set, then the training ablation on it (the
        # test suite's tiny model), launched from the UI's API with its config
        pretraining = materialize_from_ui(url, location["name"], "pretraining_set")
        ablation = materialize_from_ui(url, location["name"], "ablation", {
            "ops": {"ablation": {"config": {"config": "tiny"}}}})
        check_partitions = check_statuses(url)
        shots = {}
        check_text = ""
        ablation_text = ablation_report = metadata_text = pretraining_text = ""
        if screenshots:
            out.mkdir(parents=True, exist_ok=True)
            check_text = click_and_read(
                f"{url}/assets/clean_shard?view=checks&checkDetail=token_retention",
                "Partitions", "Succeeded", out / "check_partitions.png", count=2)
            out.mkdir(parents=True, exist_ok=True)
            shard = keys[-1]
            pages = {
                "asset_graph": f"{url}/locations/{location['name']}/asset-groups/refine/lineage",
                "checks": f"{url}/assets/clean_shard?view=checks&checkDetail=token_retention",
                "backfill": f"{url}/runs/b/{backfill}?tab=runs",
                "refiner_evaluation": f"{url}/assets/refiner_evaluation",
            }
            shots = {name: str(screenshot(page, out / f"{name}.png"))
                     for name, page in pages.items()}
            shots["check_partitions"] = str(out / "check_partitions.png")
            # the shard's counts are tables the UI draws (typed columns, cells as text): read
            # them as a user sees them
            partition_page = f"{url}/assets/clean_shard?view=partitions&partition={shard}"
            metadata_text = click_and_read(partition_page, None, "status_counts",
                                           out / "partition_metadata.png")
            shots["partition_metadata"] = str(out / "partition_metadata.png")
            ablation_text = click_and_read(f"{url}/assets/ablation", None, "val_loss/refined",
                                           out / "ablation.png", height=1300)
            shots["ablation"] = str(out / "ablation.png")
            # its report, opened as a user opens it: the table, the verdicts, the curves
            ablation_report = click_and_read(f"{url}/assets/ablation", "[Show Markdown]",
                                             "Verdicts", out / "ablation_report.png",
                                             height=1300, count=0, selector="*")
            shots["ablation_report"] = str(out / "ablation_report.png")
            # the manifest's shards are a table too
            pretraining_text = click_and_read(f"{url}/assets/pretraining_set", None,
                                              "shard_table", out / "pretraining_set.png",
                                              height=2600)
            shots["pretraining_set"] = str(out / "pretraining_set.png")
            # tall enough to reach the refinement preview below the shard's numbers
            shots["refinement_preview"] = str(screenshot(
                partition_page, out / "refinement_preview.png", height=1300))
        summary = {"url": url, "backfill_id": backfill, "status": status.get("status"),
                   "seconds": round(elapsed, 1), "partitions": keys,
                   "runs": [{"run_id": r["runId"], "status": r["status"],
                             "range": [t["value"] for t in r["tags"] if t["key"] in (
                                 "dagster/asset_partition_range_start",
                                 "dagster/asset_partition_range_end")]} for r in runs],
                   "materialized": materialized, "screenshots": shots,
                   "evaluation": evaluation, "training": training,
                   "pretraining": pretraining, "ablation": ablation,
                   "ablation_page_text": ablation_text,
                   "ablation_report_text": ablation_report,
                   "partition_metadata_text": metadata_text,
                   "pretraining_page_text": pretraining_text,
                   "check_partitions": check_partitions, "check_page_text": check_text,
                   "log": str(work / "dagster_dev.log")}

        # another chunk budget for the code location: the audit, launched from the UI, tells
        # the `current` checks, and the graph shows how many shards that made stale
        stop_dev(process)
        env["PROX_MAX_CHUNK_TOKENS"] = "800"
        process = start_dev(env, work, port)
        wait_for_server(url, process)
        summary["audit"] = materialize_from_ui(url, location["name"], "lineage_audit")
        summary["stale_checks"] = check_statuses(url)
        if screenshots:
            summary["stale_graph_text"] = click_and_read(
                f"{url}/locations/{location['name']}/asset-groups/refine/lineage",
                None, "chunked_shard", out / "stale_graph.png")
            summary["stale_check_text"] = click_and_read(
                f"{url}/assets/chunked_shard?view=checks&checkDetail=current", "Partitions",
                "Failed", out / "stale_check.png", count=2)
            summary["stale_history_text"] = click_and_read(
                f"{url}/assets/chunked_shard?view=checks&checkDetail=current",
                "Execution history", "max_chunk_tokens", out / "stale_history.png")
            shots["stale_history"] = str(out / "stale_history.png")
            shots["stale_graph"] = str(out / "stale_graph.png")
            shots["stale_check"] = str(out / "stale_check.png")
        return summary
    finally:
        stop_dev(process)


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
