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
