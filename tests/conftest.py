import os
import sys
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
    from prox_dagster.tokenization import cache_dir, tokenizer_fingerprint

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
    """The tiny Llama after 500 CPU steps on the rules refiner's programs for sample pages
    (300 were too few for the sample tokenizer once rules-v2 wrote longer chunk programs)."""
    from prox_dagster.refiners import build_refiner
    from prox_dagster.refiners.training import build_llama, teacher_pairs, train_refiner
    from prox_dagster.sample import sample_documents

    def build(out, tok):
        build_llama(out, tok, seed=0)
        docs = [d.text for d in sample_documents(80, seed=11)]
        train_refiner(out, teacher_pairs(build_refiner("rules"), docs, tok), steps=500)

    return _cached_model("tiny-trained-v2", build)
