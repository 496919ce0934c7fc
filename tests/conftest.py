import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # reference baselines shared with the benchmarks

SHARED = ROOT.parent / "shared"

# Tests never reach a hub and never share a tokenizer cache with the user's.
os.environ.setdefault("PROX_CACHE_DIR", str(ROOT / ".prox_cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/{'/'.join(parts)} (absent in a fresh clone; CI has it)")
    return path


@pytest.fixture
def instance():
    """A temporary Dagster instance (real SQLite storage in a temp folder)."""
    import dagster as dg

    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(scope="session")
def sample_tokenizer():
    from prox_dagster.tokenization import load_tokenizer

    return load_tokenizer("sample")


@pytest.fixture(scope="session")
def llama_tokenizer():
    from prox_dagster.tokenization import load_tokenizer

    return load_tokenizer(str(shared_path("tokenizers", "llama2")))


@pytest.fixture(scope="session")
def sample_crawl(tmp_path_factory):
    from prox_dagster.sample import write_sample_crawl

    out = tmp_path_factory.mktemp("sample_crawl")
    write_sample_crawl(out, n_shards=4, docs_per_shard=30)
    return out


def _model_tokenizer():
    """The Llama-2 tokenizer when ../shared has it, else the offline sample tokenizer."""
    from prox_dagster.tokenization import load_tokenizer

    llama = SHARED / "tokenizers" / "llama2"
    return load_tokenizer(str(llama) if llama.is_dir() else "sample")


def _cached_model(kind: str, build) -> Path:
    """A model folder under $PROX_CACHE_DIR/models, built once (atomically) per content key."""
    import hashlib
    import shutil
    import tempfile

    from prox_dagster.refiners.training import TINY_SHAPE
    from prox_dagster.environment import cache_dir
    from prox_dagster.tokenization import tokenizer_fingerprint

    tok = _model_tokenizer()
    key = hashlib.sha256(f"{kind}|{tokenizer_fingerprint(tok)}|{sorted(TINY_SHAPE.items())}"
                         .encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{kind}-{key}"
    if not all((target / name).is_file() for name in ("config.json", "model.safetensors",
                                                      "tokenizer_config.json")):
        shutil.rmtree(target, ignore_errors=True)  # incomplete: built again
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{kind}-"))
        build(tmp, tok)
        try:
            tmp.rename(target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def tiny_model():
    """A randomly initialised few-layer Llama: it writes garbage programs."""
    from prox_dagster.refiners.training import build_llama

    return _cached_model("tiny-random-v1", lambda out, tok: build_llama(out, tok, seed=0))


@pytest.fixture(scope="session")
def trained_model():
    """The tiny Llama trained to write one fixed program per level: ``keep_doc()`` for a doc
    prompt, ``remove_lines(line_start=0, line_end=0)`` for a chunk prompt.

    A program that depends on the page (the rules refiner's, say) is more than a 2-layer model
    learns in minutes: after 500 steps it wrote parseable chunk programs for about half the
    chunks, and which half changed with the machine's floating point. Fixed programs are learnt
    to a loss near zero, so greedy decoding writes them on any machine; the fixture checks that
    on the pages the graph tests feed it (with the stage functions), and trains on if not."""
    from prox_dagster.chunking import chunk_documents
    from prox_dagster.prompts import chunk_prompt, doc_prompt
    from prox_dagster.refiners.training import build_llama, train_refiner
    from prox_dagster.sample import sample_documents

    def build(out, tok):
        build_llama(out, tok, seed=0)
        docs = [d.text for d in sample_documents(40, seed=11)]
        pairs = [(doc_prompt(t, tok), "keep_doc()") for t in docs] + [
            (chunk_prompt(c.text, tok), CHUNK_PROGRAM)
            for chunks in chunk_documents(docs, tok, 200) for c in chunks]
        for round_, (steps, lr) in enumerate([(150, 2e-3), (150, 5e-4), (150, 2e-4)]):
            train_refiner(out, pairs, steps=steps, lr=lr, seed=round_, max_length=2048)
            programs = _graph_programs(out)
            if programs == ({"keep_doc()"}, {CHUNK_PROGRAM}):
                return
        raise RuntimeError(f"the tiny refiner did not learn its fixed programs in 450 steps: "
                           f"it wrote {programs}")

    return _cached_model("tiny-fixed-programs-v1", build)


CHUNK_PROGRAM = "remove_lines(line_start=0, line_end=0)"


def _graph_programs(model_dir) -> tuple[set[str], set[str]]:
    """The doc and chunk programs ``model_dir`` writes for the pages of the two sample shards
    that tests/test_lm_refiners.py runs through the graph (same stage functions, hf backend)."""
    import polars as pl

    from prox_dagster.pipeline import chunk_shard, refine_chunks, refine_documents
    from prox_dagster.refiners.hf import HFRefiner
    from prox_dagster.sample import sample_documents

    refiner = HFRefiner(str(model_dir), device="cpu")
    texts = [d.text for s in range(2)
             for d in sample_documents(8, seed=s, shard=f"sample-crawl.{s:05d}")]
    docs = refine_documents(pl.DataFrame({"id": [str(i) for i in range(len(texts))],
                                          "text": texts}), refiner)
    chunks = refine_chunks(chunk_shard(docs, refiner.tokenizer, 200), refiner)
    return set(docs["doc_program"]), set(chunks["chunk_program"])


BUCKET = "prox-test"


@pytest.fixture
def s3(monkeypatch):
    """A real S3-compatible server (moto's, the external edge) on 127.0.0.1 with the bucket
    ``BUCKET``; the ``AWS_*`` variables point at it."""
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        pytest.skip("needs moto's server (pip install 'moto[server]'; the dev extra has it)")
    import s3fs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()  # a cached client would keep an old endpoint
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    try:
        yield fs
    finally:
        process.terminate()
        process.wait(timeout=10)
        s3fs.S3FileSystem.clear_instance_cache()


HEADROOM = 6 << 30  # bytes of address space a hostile-input module may map beyond its start


def _mapped_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@pytest.fixture(scope="module")
def memory_limit():
    """An address-space limit (HEADROOM beyond what the process maps when the module starts)
    for the module: a regression to unbounded memory fails with a MemoryError instead of
    taking the machine down."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _mapped_bytes() + HEADROOM
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
