"""A hostile or broken refiner server: what it answers costs one document, never a shard, and
what it echoes never reaches a log or the UI. The server is a real HTTP server on 127.0.0.1
that answers what each test chose (the one fake here, standing at the network edge). The
module runs under an address-space limit, each request under a 10 s timeout."""

from __future__ import annotations

import http.server
import json
import re
import threading

import polars as pl
import pytest

from conftest import shared_path
from prox_dagster.checkpoints import BatchCheckpoints
from prox_dagster.pipeline import refine_documents
from prox_dagster.preview import PreviewCollector
from prox_dagster.refiners import RefinerError, build_refiner
from prox_dagster.store import ShardStore
from prox_dagster.untrusted import markdown_text, program_text, redact

API_KEY = "sk-live-4f9c2e7a1b3d5f7h9j"
pytestmark = pytest.mark.usefixtures("memory_limit")  # conftest: an address-space limit


class _Server(http.server.ThreadingHTTPServer):
    def __init__(self, answer):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer  # (request headers, request body) -> (status, body bytes)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, data = self.server.answer(dict(self.headers), json.loads(body))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    started = []

    def start(answer):
        srv = _Server(answer)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        started.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in started:
        srv.shutdown()
        srv.server_close()


def _completion(text_json: str) -> bytes:
    """A completions answer whose text is the JSON string literal ``text_json``, as sent."""
    return ('{"id": "c", "object": "text_completion", "created": 0, "model": "m", '
            f'"choices": [{{"index": 0, "text": {text_json}, "finish_reason": "stop", '
            '"logprobs": null}]}').encode()


def _refiner(base_url: str):
    return build_refiner("openai", doc_model="m", base_url=base_url, api_key=API_KEY,
                         tokenizer=str(shared_path("tokenizers", "llama2")), max_retries=0,
                         request_timeout_s=10)


def test_a_lone_surrogate_in_an_answer_costs_that_document_alone(server, tmp_path):
    """The answer for the second document holds a lone surrogate (``\\ud800`` in the JSON):
    that document's program becomes text a file can hold and fails to parse (the document
    falls back to being kept), the others are refined, the batch is checkpointed and resumed."""
    def answer(headers, request):
        prompt = request["prompt"]
        if "second page" in prompt:
            return 200, _completion(r'"\ud800drop_doc()"')
        return 200, _completion('"drop_doc()" ' if "junk" in prompt else '"keep_doc()"')

    raw = pl.DataFrame({"id": ["a", "b", "c"],
                        "text": ["A first page of prose about rivers.",
                                 "A second page of prose about hills.",
                                 "junk junk junk"]})
    store = ShardStore(tmp_path)
    checkpoints = BatchCheckpoints(store, "doc_refined_shard", "s", "fp")
    refined = refine_documents(raw, _refiner(server(answer)), checkpoints=checkpoints)
    assert refined["doc_program"].to_list() == ["keep_doc()", "\ufffddrop_doc()", "drop_doc()"]
    assert refined["doc_parse_ok"].to_list() == [True, False, True]
    assert refined["doc_keep"].to_list() == [True, True, False]
    refined.write_parquet(tmp_path / "out.parquet")  # storable: no surrogate left
    again = BatchCheckpoints(store, "doc_refined_shard", "s", "fp")
    resumed = refine_documents(raw, _refiner(server(lambda h, r: (500, b"{}"))),
                               checkpoints=again)
    assert resumed.equals(refined) and again.stats["prompts_resumed"] == 3


def test_an_error_body_that_echoes_the_credentials_is_redacted(server):
    def echo(headers, request):
        return 400, json.dumps({"error": {"message": f"bad request; you sent {headers}"}}
                               ).encode()

    with pytest.raises(RefinerError) as caught:
        _refiner(server(echo)).generate(["A page."], level="doc")
    message = str(caught.value)
    assert "answered 400" in message and "bad request" in message
    assert API_KEY not in message and "4f9c2e7a" not in message
    assert "[redacted]" in message
    assert caught.value.__cause__ is None  # the raw exception, body and all, is not chained


def test_redaction_catches_what_carries_a_credential():
    for text in (f"Authorization: Bearer {API_KEY}", "'x-api-key': 'abcdef123456'",
                 "token=ghp_abcdefghijkl", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG",
                 "id AKIAIOSFODNN7EXAMPLE used", "password: hunter22"):
        redacted = redact(text)
        assert "[redacted]" in redacted, text
        for secret in (API_KEY, "abcdef123456", "ghp_abcdefghijkl", "wJalrXUtnFEMI",
                       "AKIAIOSFODNN7EXAMPLE", "hunter22"):
            assert secret not in redacted
    assert redact("the key is zq81-Ka (custom)", ("zq81-Ka",)) == \
        "the key is [redacted] (custom)"
    assert redact("nothing to hide here") == "nothing to hide here"


def test_refiner_and_page_text_reach_the_preview_escaped():
    """A drop_doc() comment and a page that carry Markdown and HTML show as text: no forged
    table row, link or tag in what an operator reads."""
    forged = "spam | injected-doc | kept | [click](http://evil) <img src=x onerror=alert(1)>"
    doc = pl.DataFrame({"id": ["d<b>1"], "text": [f"page {forged}"],
                        "doc_program": [f"drop_doc()  # {forged}"]})
    clean = pl.DataFrame({"text": [None], "status": ["dropped_doc"]},
                         schema={"text": pl.String, "status": pl.String})
    collector = PreviewCollector()
    collector.add(doc, {}, clean)  # no chunk programs: the document was dropped
    markdown = collector.markdown()
    row = next(line for line in markdown.splitlines() if line.startswith("| d\\<b\\>1"))
    assert len(re.split(r"(?<!\\)\|", row)) == 6  # four cells: no row or cell forged
    for live in ("<img", "<b>", "](http", "[click]", "://"):  # each only as escaped text
        assert not re.search(r"(?<!\\)" + re.escape(live), row), live
    assert "\\<img" in row and "\\[click\\]" in row
    assert markdown_text("a" * 500).endswith("…") and len(markdown_text("a" * 500)) == 100
    assert program_text(None) == "" and program_text("ok\udfff") == "ok\ufffd"
