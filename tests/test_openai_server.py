"""The openai refiner against a real OpenAI-compatible server: vLLM's own, serving the tiny model
on 127.0.0.1, behind a fault-injecting proxy (the one fake here, standing at the network edge):
it answers 429 and 503 to some requests and forwards the rest unchanged."""

import http.server
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from prox_dagster.refiners import RefinerError, build_refiner

from test_lm_refiners import PROMPTS, needs_vllm

pytestmark = [needs_vllm, pytest.mark.lm]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model):
    port = _free_port()
    env = {**os.environ, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
         "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
         "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
         "--gpu-memory-utilization", "0.3"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited: {proc.stderr.read()[-2000:].decode()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("vLLM server did not answer /health within 240 s")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


class FlakyProxy(http.server.ThreadingHTTPServer):
    """Forwards POSTs to ``upstream``; the 1st request gets 429 (with ``Retry-After`` when
    ``retry_after`` is set), every 3rd one 503. ``arrivals`` holds each request's time."""

    def __init__(self, upstream: str, retry_after: str | None = "0.05"):
        self.upstream = upstream
        self.retry_after = retry_after
        self.counter = itertools.count(1)
        self.faults = 0
        self.arrivals: list[float] = []
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        n = next(self.server.counter)
        self.server.arrivals.append(time.monotonic())
        if n == 1 or n % 3 == 0:
            self.server.faults += 1
            self.send_response(429 if n == 1 else 503)
            if self.server.retry_after is not None:
                self.send_header("Retry-After", self.server.retry_after)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "injected fault"}')
            return
        request = urllib.request.Request(self.server.upstream + self.path, data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_proxy(vllm_server):
    proxy = FlakyProxy(vllm_server)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()


def test_completions_survive_429_and_503_and_match_offline_greedy(flaky_proxy, tiny_model):
    base = f"http://127.0.0.1:{flaky_proxy.server_address[1]}"
    refiner = build_refiner("openai", doc_model="tiny", base_url=base, max_concurrency=2,
                            tokenizer=str(tiny_model))
    outputs = refiner.generate(PROMPTS * 3, level="chunk")
    expected = build_refiner("hf", doc_model=str(tiny_model)).generate(PROMPTS, level="chunk")
    assert outputs == expected * 3
    assert flaky_proxy.faults >= 2 and refiner.stats["retries"] == flaky_proxy.faults
    assert refiner.stats["requests"] == len(PROMPTS) * 3 + flaky_proxy.faults
    assert refiner.version.startswith("openai:tiny@")


def test_the_servers_retry_after_is_honoured(vllm_server):
    proxy = FlakyProxy(vllm_server, retry_after="1.5")
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        refiner = build_refiner("openai", doc_model="tiny", max_concurrency=1,
                                base_url=f"http://127.0.0.1:{proxy.server_address[1]}")
        refiner.generate(PROMPTS[:1], level="chunk")
    finally:
        proxy.shutdown()
    first, second = proxy.arrivals[:2]  # the 429, then its retry
    assert 1.4 <= second - first < 5, proxy.arrivals  # not the 0.5 s default backoff


def test_errors_are_clear_and_not_retried_when_retrying_cannot_help(vllm_server):
    refiner = build_refiner("openai", doc_model="no-such-model", base_url=vllm_server)
    with pytest.raises(RefinerError, match="answered 404 for model 'no-such-model'"):
        refiner.generate(PROMPTS[:1], level="chunk")
    assert (refiner.stats["requests"], refiner.stats["retries"]) == (1, 0)
    down = build_refiner("openai", doc_model="tiny", base_url=f"http://127.0.0.1:{_free_port()}",
                         max_retries=2)
    with pytest.raises(RefinerError, match="unreachable .* after 3 attempts"):
        down.generate(PROMPTS[:1], level="chunk")
    assert down.stats["requests"] == 3


def test_the_openai_backend_through_the_resource_refines_a_shard(vllm_server, tiny_model,
                                                                  tmp_path, monkeypatch):
    # as the README sets it up: backend, server, served name, and the tokenizer that counts
    # chunk budgets here (the server's cannot be asked)
    import dagster as dg
    import polars as pl

    from prox_dagster import definitions
    from prox_dagster.sample import write_sample_crawl
    from prox_dagster.resources import CheckThresholds, RefinerResource

    for name, value in {"PROX_REFINER_BACKEND": "openai", "PROX_REFINER_BASE_URL": vllm_server,
                        "PROX_DOC_MODEL": "tiny", "PROX_REFINER_TOKENIZER": str(tiny_model),
                        "PROX_MAX_CHUNK_TOKENS": "200", "PROX_MAX_PROMPT_TOKENS": "2047",
                        # a CPU vLLM server on a busy 2-core machine can take minutes a batch
                        "PROX_REFINER_TIMEOUT_S": "900"}.items():
        monkeypatch.setenv(name, value)
    refiner = RefinerResource.from_env()
    assert refiner.resolved().openai.request_timeout_s == 900
    write_sample_crawl(tmp_path, n_shards=1, docs_per_shard=3)
    lenient = CheckThresholds(min_doc_parse_rate=0, min_chunk_parse_rate=0,
                              min_token_retention=0, min_kept_share=0)
    defs = definitions.build_definitions(data_dir=tmp_path, refiner=refiner, checks=lenient)
    with dg.instance_for_test() as instance:
        [key] = definitions.register_new_shards(defs, instance)
        assert definitions.materialize_shard(defs, instance, key).success
        chunked = definitions.latest_metadata(instance, "chunked_shard", key)
    assert chunked["tokenizer"] == str(tiny_model)  # the refiner's, not the pretraining one
    chunks = pl.read_parquet(tmp_path / "chunk_refined_shard" / f"{key}.parquet")
    assert chunks.height and (chunks["n_tokens"] <= 200).all()
    version = refiner.resolved().version
    assert set(chunks["refiner_version"]) == {version}
    assert version.startswith("openai:tiny@")
