"""Write the files the embedded sample ships with, so the demo is identical on every machine.

    python scripts/freeze_sample_data.py

- ``prox_dagster/data/sample_paragraphs.json.gz``: the prose paragraphs of the Python
  documentation (``pydoc_data.topics`` of the running interpreter) that the sample crawl wraps
  in boilerplate. ``pydoc_data`` changes between Python releases, so it is read once, here.
- ``prox_dagster/data/sample_tokenizer.json.gz``: the default ``sample`` tokenizer, a byte-level
  BPE (8,192 entries at most, ``<s>`` prepended, ``</s>`` as EOS) trained on the sample texts.
  Training output may differ between versions of ``tokenizers``, so the trained file is shipped.

Run it only to change the sample on purpose; then update ``SAMPLE_TOKENIZER_SHA256`` in
``prox_dagster/tokenization.py`` (printed below) and the README's demo table.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prox_dagster.sample import PARAGRAPHS_FILE, sample_texts  # noqa: E402
from prox_dagster.tokenization import SAMPLE_TOKENIZER_FILE, SAMPLE_VOCAB_SIZE  # noqa: E402


def documentation_paragraphs() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    out = []
    for topic in sorted(topics):
        for para in topics[topic].split("\n\n"):
            if para.startswith((" ", "\t")):
                continue  # indented blocks are code or grammar, not prose
            text = " ".join(para.split())
            if len(text.split()) >= 25 and not re.search(r"[{}<>=]{2}|::=", text):
                out.append((topic, text.lstrip("* ")))
    return out


def train_tokenizer(texts: list[str]) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=SAMPLE_VOCAB_SIZE,
                                  special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok.to_str()


def write_gz(path: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        # mtime 0: the same content gives the same file bytes
        with gzip.GzipFile(fileobj=tmp, mode="wb", mtime=0, compresslevel=9) as gz:
            gz.write(data)
    os.chmod(tmp.name, 0o644)
    Path(tmp.name).replace(path)


if __name__ == "__main__":
    PARAGRAPHS_FILE.parent.mkdir(parents=True, exist_ok=True)
    write_gz(PARAGRAPHS_FILE, json.dumps(documentation_paragraphs(), ensure_ascii=False,
                                         indent=0).encode())
    tokenizer_json = train_tokenizer(sample_texts()).encode()
    write_gz(SAMPLE_TOKENIZER_FILE, tokenizer_json)
    print(f"{PARAGRAPHS_FILE}\n{SAMPLE_TOKENIZER_FILE}\n"
          f"SAMPLE_TOKENIZER_SHA256 = \"{hashlib.sha256(tokenizer_json).hexdigest()}\"")
