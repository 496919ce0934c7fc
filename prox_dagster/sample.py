"""The embedded sample crawl: realistic noisy web documents with ground-truth labels, offline.

Real prose (the Python documentation's, frozen in ``data/``) wrapped in the boilerplate of
several site themes, some mojibake and a share of junk pages; deterministic for a seed. It writes
``{out}/raw/sample-crawl.0000N.*`` in every raw format, line labels in ``{out}/labels/`` and a
held-out prose set; the first shard holds two malformed records for the quarantine path.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .atomic_writes import write_atomic, write_text_atomic

SHARD_PREFIX = "sample-crawl"
FORMATS = (".jsonl.gz", ".jsonl.zst", ".parquet", ".jsonl")
JUNK_SHARE = 0.22
LABELLED_SET = f"{SHARD_PREFIX}.labelled.jsonl"
HELDOUT_SET = f"{SHARD_PREFIX}.heldout.jsonl"  # clean prose no crawl document holds

_THEMES = [
    {
        "site": "DevNotes", "domain": "devnotes.example.com",
        "nav": ["Home | Tutorials | Reference | Blog | Contact",
                "Skip to main content", "Menu"],
        "crumb": "Home » {section} » {title}",
        "byline": "Posted on {date} by {author}",
        "share": ["Share this:", "Facebook", "Twitter", "LinkedIn", "Email"],
        "footer": ["© {year} DevNotes. All rights reserved.",
                   "Privacy Policy | Terms of Service | Sitemap"],
    },
    {
        "site": "The Code Journal", "domain": "codejournal.example.org",
        "nav": ["Skip to content", "News / Guides / Reviews / Podcasts / About"],
        "crumb": "Home > {section} > {title}",
        "byline": "By {author} | {date}",
        "share": ["Share on Facebook | Share on Twitter | Share via Email"],
        "footer": ["Copyright {year} The Code Journal Media Group",
                   "About Us · Contact · Careers · Advertise",
                   "Terms & Conditions | Cookie Policy"],
    },
    {
        "site": "pyforum", "domain": "forum.pyexample.net",
        "nav": ["Log in", "Register", "Forum » Board index » {section}"],
        "crumb": None,
        "byline": "{author} says:",
        "share": ["Tweet", "Pin it", "Print"],
        "footer": ["Powered by phpBB® Forum Software © phpBB Limited",
                   "Back to top"],
    },
    {
        "site": "LearnStack", "domain": "learnstack.example.io",
        "nav": ["Courses • Paths • Pricing • Sign in", "Search"],
        "crumb": "Courses › {section} › {title}",
        "byline": "Written by {author} on {date}",
        "share": ["Follow us on Twitter", "Share this article"],
        "footer": ["© {year} LearnStack Inc. All rights reserved.",
                   "Privacy | Terms | Help Center | Status"],
    },
]
_COOKIES = [
    "We use cookies to ensure that we give you the best experience on our website. If you "
    "continue to use this site we will assume that you are happy with it.",
    "This site uses cookies to personalise content and ads and to analyse our traffic. By "
    "browsing you agree to our use of cookies.",
    "We value your privacy. We and our partners use cookies to store and access information on "
    "your device.",
]
_COOKIE_BUTTONS = ["Accept", "Accept all", "Got it", "OK"]
_RELATED_HEAD = ["Related posts", "Related Posts:", "You may also like", "Popular Posts"]
_COMMENT_CHROME = [
    "Leave a Reply",
    "Your email address will not be published. Required fields are marked *",
    "Post Comment",
]
_AUTHORS = ["admin", "jsmith", "maria_k", "devteam", "Alex Chen", "Priya R."]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
_SPAM_WORDS = ["cheap", "best", "price", "buy", "online", "discount", "free", "shipping",
               "watches", "replica", "deal", "sale", "top", "rated", "2024", "official", "store"]
_MOJIBAKE = {"’": "â€™", "“": "â€œ", "”": "â€\x9d", "—": "â€”", "–": "â€“", "é": "Ã©",
             "'": "â€™"}


@dataclass
class SampleDocument:
    id: str
    text: str
    url: str
    junk: bool
    kind: str
    line_labels: str
    mojibake: bool


PARAGRAPHS_FILE = Path(__file__).with_name("data") / "sample_paragraphs.json.gz"


@functools.lru_cache(maxsize=1)
def _paragraphs() -> list[tuple[str, str]]:
    # frozen from pydoc_data by scripts/freeze_sample_data.py: the crawl is the same whatever
    # the interpreter's release
    with gzip.open(PARAGRAPHS_FILE, "rt", encoding="utf-8") as fh:
        return [tuple(pair) for pair in json.load(fh)]


def _title(topic: str) -> str:
    return topic.replace("-", " ").replace("_", " ").capitalize()


def _date(rng: random.Random) -> str:
    return f"{rng.choice(_MONTHS)} {rng.randint(1, 28)}, {rng.randint(2019, 2026)}"


def _good_document(rng: random.Random, paragraphs, doc_id: str) -> SampleDocument:
    theme = rng.choice(_THEMES)
    start = rng.randrange(len(paragraphs) - 8)
    topic = paragraphs[start][0]
    body = list(dict.fromkeys(p for _, p in paragraphs[start:start + rng.randint(2, 7)]))
    title = _title(topic)
    fmt = {"section": rng.choice(["Python", "Guides", "Language"]), "title": title,
           "date": _date(rng), "author": rng.choice(_AUTHORS), "year": rng.randint(2015, 2026)}
    lines: list[tuple[str, str]] = []

    def boiler(*texts: str) -> None:
        lines.extend((t.format(**fmt), "B") for t in texts)

    if rng.random() < 0.5:
        boiler(rng.choice(_COOKIES), rng.choice(_COOKIE_BUTTONS))
    boiler(*theme["nav"])
    if theme["crumb"]:
        boiler(theme["crumb"])
    lines.append((title, "M"))
    if rng.random() < 0.8:
        boiler(theme["byline"])
    mojibake = rng.random() < 0.15
    garbled = rng.randrange(len(body)) if mojibake else -1
    for i, para in enumerate(body):
        if i == garbled:
            for good, bad in _MOJIBAKE.items():
                para = para.replace(good, bad)
        if rng.random() < 0.3:
            lines.append(("", "_"))
        lines.append((para, "M"))
    lines.append(("", "_"))
    boiler(*theme["share"])
    if rng.random() < 0.6:
        head = rng.choice(_RELATED_HEAD)
        others = rng.sample(paragraphs, 3)
        boiler(head)
        lines.extend((_title(t) + " explained", "B") for t, _ in others)
    if rng.random() < 0.5:
        boiler(f"{rng.randint(0, 40)} Comments", *_COMMENT_CHROME)
    lines.append(("", "_"))
    boiler(*theme["footer"])
    if mojibake and garbled < 0:
        mojibake = False
    return SampleDocument(
        id=doc_id, text="\n".join(t for t, _ in lines),
        url=f"https://{theme['domain']}/{topic}/{doc_id.rsplit('/', 1)[-1]}",
        junk=False, kind="article", line_labels="".join(lab for _, lab in lines),
        mojibake=mojibake)


def _junk_document(rng: random.Random, paragraphs, doc_id: str) -> SampleDocument:
    theme = rng.choice(_THEMES)
    kind = rng.choice(["spam", "lorem", "not_found", "login_wall", "product_grid", "numbers"])
    if kind == "spam":
        body = [" ".join(rng.choice(_SPAM_WORDS) for _ in range(rng.randint(8, 16)))
                for _ in range(rng.randint(6, 14))]
    elif kind == "lorem":
        sentence = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
                    "tempor incididunt ut labore et dolore magna aliqua.")
        body = ["Sample Page", sentence * rng.randint(2, 5), sentence]
    elif kind == "not_found":
        body = ["404 Not Found", "The page you are looking for does not exist.",
                "Return to homepage"]
    elif kind == "login_wall":
        body = ["Members only", "Please log in to continue reading this article.",
                "Username", "Password", "Forgot password?"]
    elif kind == "product_grid":
        body = [f"Item {rng.randint(100, 999)} ${rng.randint(5, 99)}.99 Add to cart"
                for _ in range(rng.randint(8, 20))]
    else:
        body = [" ".join(str(rng.randint(0, 9999)) for _ in range(rng.randint(6, 12)))
                for _ in range(rng.randint(8, 20))]
    lines = [(t, "B") for t in theme["nav"]] + [(t, "M") for t in body]
    lines += [(t.format(year=2024), "B") for t in theme["footer"]]
    return SampleDocument(
        id=doc_id, text="\n".join(t for t, _ in lines),
        url=f"https://{theme['domain']}/p/{doc_id.rsplit('/', 1)[-1]}", junk=True, kind=kind,
        line_labels="".join(lab for _, lab in lines), mojibake=False)


def sample_documents(n_docs: int, seed: int = 0, shard: str = "sample") -> list[SampleDocument]:
    rng = random.Random(seed)
    paragraphs = _paragraphs()
    docs = []
    for i in range(n_docs):
        doc_id = f"{shard}/{i:05d}"
        make = _junk_document if rng.random() < JUNK_SHARE else _good_document
        docs.append(make(rng, paragraphs, doc_id))
    return docs


def sample_texts(n_docs: int = 400, seed: int = 12345) -> list[str]:
    """Texts to train the default tokenizer on (same generator, its own seed)."""
    return [d.text for d in sample_documents(n_docs, seed=seed)]


def write_sample_crawl(out_dir: str | Path, n_shards: int = 4, docs_per_shard: int = 30,
                       seed: int = 0) -> list[Path]:
    """Write the sample crawl's raw shards and labels; returns the raw shard paths.

    ``labels/sample-crawl.labelled.jsonl`` holds every document with its labels in the format of
    a labelled set (``text``, ``line_labels``, ``label``: 1 article, 0 junk): what
    ``prox-dagster eval`` and ``refiner_evaluation`` score and ``train-refiner`` learns from
    when no other set is named."""
    out = Path(out_dir)
    paths = []
    labelled: list[str] = []
    crawl_lines: set[str] = set()
    for s in range(n_shards):
        key = f"{SHARD_PREFIX}.{s:05d}"
        docs = sample_documents(docs_per_shard, seed=seed * 1000 + s, shard=key)
        crawl_lines.update(line for d in docs for line in d.text.split("\n"))
        records = [{"id": d.id, "text": d.text, "url": d.url,
                    "crawl_date": f"2026-10-{(s % 28) + 1:02d}"} for d in docs]
        suffix = FORMATS[s % len(FORMATS)]
        path = out / "raw" / f"{key}{suffix}"
        lines = [json.dumps(r, ensure_ascii=False) for r in records]
        if s == 0:
            lines.insert(3, '{"id": "broken-record", "text": "unterminated')
            lines.insert(7, json.dumps({"id": "no-text-record", "url": "https://x.example/"}))
        _write_raw(path, suffix, records, lines)
        labels = [{"id": d.id, "junk": d.junk, "kind": d.kind, "line_labels": d.line_labels,
                   "mojibake": d.mojibake} for d in docs]
        write_text_atomic("".join(json.dumps(r) + "\n" for r in labels),
                          out / "labels" / f"{key}.labels.jsonl")
        # a junk page's "main" lines are no content worth keeping: noise in the labelled set
        labelled.extend(json.dumps({"id": d.id, "text": d.text, "url": d.url,
                                    "line_labels": d.line_labels.replace("M", "B") if d.junk
                                    else d.line_labels, "label": int(not d.junk)},
                                   ensure_ascii=False) + "\n" for d in docs)
        paths.append(path)
    write_text_atomic("".join(labelled), out / "labels" / LABELLED_SET)
    write_text_atomic(heldout_jsonl(crawl_lines), out / "labels" / HELDOUT_SET)
    return paths


def heldout_jsonl(crawl_lines: set[str]) -> str:
    """The sample prose no crawl document holds, as clean texts (one per topic, in the pool's
    order): what the training ablation scores its arms on by default."""
    by_topic: dict[str, list[str]] = {}
    for topic, paragraph in _paragraphs():
        if paragraph not in crawl_lines:
            by_topic.setdefault(topic, []).append(paragraph)
    return "".join(json.dumps({"id": f"heldout-{i:04d}", "clean_text": "\n".join(texts)},
                              ensure_ascii=False) + "\n"
                   for i, texts in enumerate(by_topic.values()))


def _write_raw(path: Path, suffix: str, records: list[dict], lines: list[str]) -> None:
    payload = ("\n".join(lines) + "\n").encode("utf-8")
    if suffix == ".parquet":
        write_atomic(path, lambda tmp: pl.DataFrame(records).write_parquet(tmp))
    elif suffix == ".jsonl.gz":
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
            gz.write(payload)
        write_atomic(path, lambda tmp: tmp.write_bytes(buf.getvalue()))
    elif suffix == ".jsonl.zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(payload)
        write_atomic(path, lambda tmp: tmp.write_bytes(data))
    else:
        write_atomic(path, lambda tmp: tmp.write_bytes(payload))
