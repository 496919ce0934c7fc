"""The ``openai`` refiner: any OpenAI-compatible completions server (vLLM serve, SGLang, TGI).

Requests run with bounded concurrency; a 429, a 5xx, a dropped connection or a timeout is
retried with exponential backoff (``backoff_s * 2**attempt``, at most ``max_retries`` retries);
any other error stops the batch with the server's answer in the message. The server's weights
cannot be hashed from here, so ``revision`` (whatever names the served weights) is part of the
version.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from .lm import LMRefiner, RefinerError

RETRIABLE = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIRefiner(LMRefiner):
    backend = "openai"

    def __init__(self, doc_model: str, chunk_model: str | None = None, *, base_url: str,
                 api_key: str | None = None, revision: str | None = None,
                 dialect: str = "prox", tokenizer: str | None = None, max_concurrency: int = 8,
                 request_timeout_s: float = 120.0, max_retries: int = 5,
                 backoff_s: float = 0.5):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.max_concurrency = max_concurrency
        self.request_timeout_s = request_timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.stats = {"requests": 0, "retries": 0}
        super().__init__(doc_model, chunk_model, revision=revision, dialect=dialect,
                         tokenizer=tokenizer)

    def _identity(self, model: str) -> str:
        return f"{model}@{self.revision or 'served'}"

    def _generate(self, model: str, prompts: list[str], max_new_tokens: int) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(lambda p: self._complete(model, p, max_new_tokens), prompts))

    def _complete(self, model: str, prompt: str, max_tokens: int) -> str:
        body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                           "temperature": 0.0}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = f"{self.base_url}/v1/completions"
        for attempt in range(self.max_retries + 1):
            self.stats["requests"] += 1
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.request_timeout_s) as response:
                    payload = json.loads(response.read())
                return payload["choices"][0]["text"]
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace")
                if exc.code not in RETRIABLE or attempt == self.max_retries:
                    raise RefinerError(f"{url} answered {exc.code} for model {model!r} "
                                       f"(attempt {attempt + 1}): {detail}") from exc
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as exc:
                if attempt == self.max_retries:
                    raise RefinerError(f"{url} unreachable for model {model!r} after "
                                       f"{attempt + 1} attempts: {exc}") from exc
            except (KeyError, IndexError, ValueError) as exc:
                raise RefinerError(f"{url} gave a malformed completion for {model!r}: {exc}"
                                   ) from exc
            self.stats["retries"] += 1
            time.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")
