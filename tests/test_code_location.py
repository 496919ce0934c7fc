"""Loading the code location builds no model, loads no weights and asks no hub, whatever the
backend; the step that needs the model resolves it, and an unreachable hub fails that step,
naming the model. The CLI builds the refiner once per command."""

import http.server
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from prox_dagster import cli
from prox_dagster.refiners import BACKENDS, RulesConfig
from prox_dagster.refiners.classifier import ClassifierRefiner
from prox_dagster.sample import LABELLED_SET, write_sample_crawl

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
HUB_MODEL = "gair-prox/web-chunk-refining-lm"


class Hub(http.server.ThreadingHTTPServer):
    """A hub endpoint that counts what it is asked and answers 503 (a hub that is down: the
    external edge)."""

    def __init__(self):
        self.asked: list[str] = []
        super().__init__(("127.0.0.1", 0), _Down)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Down(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.asked.append(self.path)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_POST = do_GET

    def log_message(self, *args):
        pass


LOAD = """
import json, sys, time
started = time.perf_counter()
from prox_dagster import definitions
graph = definitions.defs().resolve_asset_graph()
import dagster as dg
print(json.dumps({
    "seconds": time.perf_counter() - started,
    "code_version": graph.get(dg.AssetKey("doc_refined_shard")).code_version,
    "imported": sorted(m for m in ("torch", "transformers", "vllm", "lightgbm", "openai")
                       if m in sys.modules)}))
"""

BACKEND_ENV = {
    "classifier": {},
    "rules": {},
    "hf": {"PROX_DOC_MODEL": HUB_MODEL},
    "vllm": {"PROX_DOC_MODEL": HUB_MODEL},
    "openai": {"PROX_DOC_MODEL": HUB_MODEL, "PROX_REFINER_BASE_URL": "http://127.0.0.1:9"},
}


def _env(tmp_path: Path, hub: Hub, backend: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    return {**env, "PROX_REFINER_BACKEND": backend, **BACKEND_ENV[backend],
            "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_address[1]}",
            "HF_HOME": str(tmp_path / "hf"), "PROX_CACHE_DIR": str(tmp_path / "cache"),
            "PROX_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}


@pytest.mark.parametrize("backend", sorted(BACKEND_ENV))
def test_the_code_location_loads_offline_with_any_backend(tmp_path, backend):
    hub = Hub()
    out = subprocess.run([sys.executable, "-c", LOAD], env=_env(tmp_path, hub, backend),
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert hub.asked == []  # no hub request, though the hub is configured and online
    assert loaded["imported"] == []  # no model library, so no model, was loaded
    if backend in ("hf", "vllm"):
        # its commit is not known yet: the step resolves it
        assert f"{backend}:{HUB_MODEL}@" in loaded["code_version"]


STEP = """
import sys
import dagster as dg
from prox_dagster import definitions
defs = definitions.build_definitions()
instance = dg.DagsterInstance.get()
definitions.register_new_shards(defs, instance)
result = definitions.materialize_shard(defs, instance, "sample-crawl.00000")
print("\\n".join(e.event_specific_data.error.to_string() for e in result.all_events
                if e.is_step_failure))
"""


def test_an_unreachable_hub_fails_the_refiner_step_naming_the_model(tmp_path):
    hub = Hub()
    write_sample_crawl(tmp_path / "data", n_shards=1, docs_per_shard=3)
    (tmp_path / "home").mkdir()
    out = subprocess.run([sys.executable, "-c", STEP], env=_env(tmp_path, hub, "hf"),
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert hub.asked  # the step asked the hub ...
    # ... and failed, naming the model; the raw shard before it was written
    assert f"model {HUB_MODEL!r} revision 'main' cannot be resolved to a commit" in out.stdout
    assert "the hub did not answer" in out.stdout
    assert (tmp_path / "data" / "raw_shard" / "sample-crawl.00000.parquet").exists()


BUILT: Counter = Counter()


class CountedBuild(ClassifierRefiner):
    def __init__(self, *args, **kwargs):
        BUILT["classifier"] += 1
        super().__init__(*args, **kwargs)


def test_the_cli_builds_the_refiner_once_per_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(BACKENDS, "classifier", lambda model=None, **options: CountedBuild(
        model or None, RulesConfig(**options)))
    write_sample_crawl(tmp_path / "data", n_shards=1, docs_per_shard=4)
    monkeypatch.setenv("PROX_DATA_DIR", str(tmp_path / "data"))
    BUILT.clear()
    assert cli.main(["eval", str(tmp_path / "data" / "labels" / LABELLED_SET),
                     "--format", "json"]) == 0
    assert BUILT["classifier"] == 1
    (tmp_path / "home").mkdir()
    BUILT.clear()
    assert cli.main(["audit", "--dagster-home", str(tmp_path / "home")]) == 0
    assert BUILT["classifier"] == 1
    capsys.readouterr()


RUN = """
import json, sys
import dagster as dg
from prox_dagster import definitions
defs = definitions.build_definitions()
with dg.DagsterInstance.get() as instance:
    definitions.register_new_shards(defs, instance)
    result = definitions.materialize_shards(defs, instance, sys.argv[1], sys.argv[2])
    cached = [e.materialization.metadata["cached"].value
              for e in result.get_asset_materialization_events()]
print(json.dumps({"success": result.success, "cached": cached, "imported": sorted(
    m for m in ("torch", "transformers", "tokenizers", "vllm", "lightgbm", "openai")
    if m in sys.modules)}))
"""


def test_a_run_of_cached_shards_imports_no_tokenizer_or_model(tmp_path):
    """Most shards of a pass are cached, and a run of them loads nothing a computed shard needs:
    the sample tokenizer alone costs 6.5 s of imports a run."""
    write_sample_crawl(tmp_path / "data", n_shards=2, docs_per_shard=3)
    (tmp_path / "home").mkdir()
    env = {**os.environ, "PROX_DATA_DIR": str(tmp_path / "data"),
           "DAGSTER_HOME": str(tmp_path / "home")}

    def run() -> dict:
        out = subprocess.run([sys.executable, "-c", RUN, "sample-crawl.00000",
                              "sample-crawl.00001"], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    computed = run()
    assert computed["success"] and not any(computed["cached"])
    assert "transformers" in computed["imported"]  # what computing the token files loads
    cached = run()
    assert cached["success"] and len(cached["cached"]) == 12 and all(cached["cached"])
    assert cached["imported"] == []
