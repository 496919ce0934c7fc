"""At most one in-flight step computes a shard, across runs: the store's lease, which records
its holder and is taken over only when that holder is provably gone."""

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from prox_dagster import definitions, fingerprint, leases
from prox_dagster.outputs import read_sidecar
from prox_dagster.sample import write_sample_crawl
from prox_dagster.shards import ShardError
from prox_dagster.store import ShardStore
from prox_dagster.tokenization import sample_tokenizer_path

from conftest import BUCKET

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SHARD = "sample-crawl.00000"
ROOT = Path(__file__).resolve().parent.parent


def test_a_live_holder_is_waited_for_and_a_killed_one_is_taken_over_at_once(tmp_path):
    store = ShardStore(tmp_path)
    order = []
    lock = tmp_path / ".leases" / "clean_shard" / f"{SHARD}.lock"

    def second():
        with store.lease("clean_shard", SHARD, "run-b", poll_s=0.05,
                         waiting=lambda holder: order.append(f"waiting for {holder[:9]}")):
            order.append("b computes")

    with store.lease("clean_shard", SHARD, "run-a"):
        record = json.loads(lock.read_text())
        assert record["owner"] == "run-a" and record["pid"] == os.getpid()
        assert record["host"] == socket.gethostname() and record["heartbeat"] > 0
        assert leases.lease_held(lock)
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        order.append("a done")
    thread.join(timeout=10)
    assert order == ["waiting for run run-a", "a done", "b computes"]
    assert not lock.exists() and not leases.lease_held(lock)

    # a holder killed with SIGKILL leaves its lock file behind; the kernel released its lock,
    # so the next run takes it at once, whatever that file says
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from prox_dagster.store import ShardStore\n"
        "with ShardStore(sys.argv[1]).lease('clean_shard', sys.argv[2], 'run-c'):\n"
        "    print('held', flush=True); time.sleep(600)\n"), str(tmp_path), SHARD],
        stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ShardError, match="being computed by run run-c"):
        with store.lease("clean_shard", SHARD, "run-d", wait_s=0.3, poll_s=0.05):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock.exists() and json.loads(lock.read_text())["owner"] == "run-c"
    started = time.monotonic()
    with store.lease("clean_shard", SHARD, "run-d", wait_s=5, poll_s=0.05):
        assert json.loads(lock.read_text())["owner"] == "run-d"
    assert time.monotonic() - started < 1


def test_an_s3_lease_is_taken_over_only_from_a_provably_gone_holder(s3):
    store = ShardStore(f"s3://{BUCKET}/data")
    key = f"{BUCKET}/data/.leases/clean_shard/{SHARD}.lock"

    def put(record: dict) -> str:
        s3.pipe_file(key, json.dumps(record).encode())
        return s3.info(key, refresh=True)["ETag"]

    # a live holder on another host, heartbeating: waited for, and its lease left alone
    alive = {"owner": "run-x", "host": "elsewhere", "pid": 1, "heartbeat": time.time()}
    put(alive)
    with pytest.raises(ShardError, match="being computed by run run-x"):
        with store.lease("clean_shard", SHARD, "run-y", wait_s=0.5, poll_s=0.1):
            pass
    assert json.loads(s3.cat_file(key))["owner"] == "run-x"
    # its heartbeat stopped: taken over
    put({**alive, "heartbeat": time.time() - leases.STALE_AFTER_S - 5})
    with store.lease("clean_shard", SHARD, "run-y", wait_s=5, poll_s=0.1, heartbeat_s=0.2):
        held = json.loads(s3.cat_file(key))
        assert held["owner"] == "run-y"
        time.sleep(0.6)  # the holder's heartbeat renews it (a conditional write each time)
        assert json.loads(s3.cat_file(key))["heartbeat"] > held["heartbeat"]
    assert not s3.exists(key)  # released by its holder
    # a holder on this host whose process is gone: taken over at once
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    put({"owner": "run-z", "host": socket.gethostname(), "pid": dead.pid,
         "heartbeat": time.time()})
    with store.lease("clean_shard", SHARD, "run-w", wait_s=5, poll_s=0.1):
        assert json.loads(s3.cat_file(key))["owner"] == "run-w"


def test_a_takeover_never_removes_a_lease_another_run_just_took(s3):
    """Two waiters judge the same dead lease; the takeover is a write conditional on the ETag
    each read, so the second one's fails and it waits for the first."""
    fs = s3
    key = f"{BUCKET}/leases/one.lock"
    fs.pipe_file(key, json.dumps({"owner": "dead", "host": "elsewhere", "pid": 1,
                                  "heartbeat": 0}).encode())
    judged = fs.info(key, refresh=True)["ETag"]
    with leases.s3_lease(fs, key, "run-1", wait_s=5, poll_s=0.05, waiting=None, what="one"):
        # the second waiter's takeover, with the ETag it judged dead, is refused by S3
        with pytest.raises(OSError, match="pre-condition"):
            fs.pipe_file(key, b'{"owner": "run-2"}', IfMatch=judged)
        assert json.loads(fs.cat_file(key))["owner"] == "run-1"
        with pytest.raises(leases.LeaseError, match="being computed by run run-1"):
            with leases.s3_lease(fs, key, "run-2", wait_s=0.3, poll_s=0.05, waiting=None,
                                 what="one"):
                pass
    assert not fs.exists(key)


def test_a_storage_error_is_never_read_as_nobody_holding_the_lease(tmp_path, monkeypatch):
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: refused
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(retries=1)
    with pytest.raises(leases.LeaseError, match="cannot create the lease"):
        with leases.s3_lease(fs, f"{BUCKET}/x.lock", "run-1", wait_s=1, poll_s=0.05,
                             waiting=None, what="x"):
            pass
    s3fs.S3FileSystem.clear_instance_cache()


RUN = """
import json, sys
import dagster as dg
from prox_dagster import definitions
defs = definitions.build_definitions(data_dir=sys.argv[1])
result = definitions.materialize_shard(defs, dg.DagsterInstance.get(), sys.argv[2])
print(json.dumps({"run_id": result.run_id, "success": result.success, "computed": [
    e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    if not e.materialization.metadata["cached"].value]}))
"""


def test_two_concurrent_runs_of_one_shard_compute_each_stage_once(tmp_path):
    """Two runs of the same shard at once, each in its own process on one instance (as two
    run workers are): every stage is computed by exactly one of them; the other waits for it
    and finds it current."""
    data, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    write_sample_crawl(data, n_shards=1, docs_per_shard=12)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        definitions.register_new_shards(definitions.build_definitions(data_dir=data), instance)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    workers = [subprocess.Popen([sys.executable, "-c", RUN, str(data), SHARD], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                cwd=ROOT) for _ in range(2)]
    results = [json.loads(worker.communicate(timeout=600)[0].strip().splitlines()[-1])
               for worker in workers]
    assert [r["success"] for r in results] == [True, True]
    for stage in fingerprint.STAGES:
        computed = [r["run_id"] for r in results if stage in r["computed"]]
        assert len(computed) == 1, (stage, results)
        assert read_sidecar(ShardStore(data), stage, SHARD)["run_id"] == computed[0]
    assert not list((data / ".leases").rglob("*.lock"))


class ModelServer(http.server.ThreadingHTTPServer):
    """An OpenAI-compatible completions server standing in for a GPU model server (the true
    external edge): it answers ``keep_doc()`` to a document prompt and ``keep_chunk()`` to a
    chunk prompt, or, while ``stalled``, holds every request open (a model that never
    answers). ``requests`` counts arrivals."""

    def __init__(self):
        self.stalled = threading.Event()
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _Completions)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Completions(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        prompt = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["prompt"]
        self.server.requests += 1
        while self.server.stalled.is_set():
            time.sleep(0.05)
        program = "keep_chunk()" if "[doc]\n" in prompt else "keep_doc()"
        body = json.dumps({"id": "c", "object": "text_completion", "created": 0,
                           "model": "stand-in", "choices": [{"index": 0, "text": program,
                                                             "finish_reason": "stop"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("launch", ["dagster asset materialize", "prox-dagster demo"])
def test_a_rerun_after_a_sigkill_starts_within_a_minute(tmp_path, launch):
    """A run killed with SIGKILL mid-step (an OOM kill, a preempted node) leaves its run
    STARTED in the instance and its lease file in the store; the next run of the shard, in the
    same instance, takes the lease at once and finishes."""
    pytest.importorskip("openai")
    data, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    write_sample_crawl(data, n_shards=1, docs_per_shard=4)
    server = ModelServer()
    env = {**os.environ, "DAGSTER_HOME": str(home), "PROX_DATA_DIR": str(data),
           "PROX_REFINER_BACKEND": "openai", "PROX_REFINER_BASE_URL": server.url,
           "PROX_DOC_MODEL": "stand-in", "PROX_REFINER_TOKENIZER": str(sample_tokenizer_path()),
           "PROX_REFINER_TIMEOUT_S": "600", "PYTHONUNBUFFERED": "1"}
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        definitions.register_new_shards(definitions.build_definitions(data_dir=data), instance)
    if launch == "prox-dagster demo":
        command = [str(Path(sys.executable).parent / "prox-dagster"), "demo", "--data-dir",
                   str(data), "--dagster-home", str(home)]
    else:
        command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
                   "prox_dagster.definitions", "--select", "raw_shard,doc_refined_shard",
                   "--partition", SHARD]
    server.stalled.set()
    first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while server.requests == 0:  # the doc step holds its lease and waits on the model
        assert first.poll() is None and time.monotonic() < deadline, "no model request"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    lock = data / ".leases" / "doc_refined_shard" / f"{SHARD}.lock"
    assert lock.exists() and not leases.lease_held(lock)
    server.stalled.clear()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        killed = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.STARTED]
        assert len(killed) == 1  # nothing told the instance it died
    # its heartbeat says its worker is gone: the audit does not count it as covering the shard
    audit = subprocess.run([str(Path(sys.executable).parent / "prox-dagster"), "audit",
                            "--format", "json", "--dagster-home", str(home)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    [row] = json.loads(audit.stdout)
    assert row["status"] == "missing" and row["in_flight_run"] is None

    started = time.monotonic()
    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert time.monotonic() - started < 60
    assert read_sidecar(ShardStore(data), "doc_refined_shard", SHARD) is not None
    assert not lock.exists()
