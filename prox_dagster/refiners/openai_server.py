"""The ``openai`` refiner: any OpenAI-compatible completions server (vLLM serve, SGLang, TGI).

Requests go through the ``openai`` client with bounded concurrency; 408, 409, 429, 5xx, dropped
connections and timeouts are retried after ``Retry-After`` or an exponential backoff with jitter.
The served weights cannot be hashed from here, so ``revision`` is part of the version; the
refiner's ``tokenizer`` counts budgets and ``max_prompt_tokens`` keeps back a prompt the server
would reject.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

from ..untrusted import redact
from .lm import LMRefiner, RefinerError


class OpenAIRefiner(LMRefiner):
    backend = "openai"

    def __init__(self, doc_model: str, chunk_model: str | None = None, *, base_url: str,
                 api_key: str | None = None, revision: str | None = None,
                 dialect: str = "prox", tokenizer: str | None = None, max_concurrency: int = 8,
                 request_timeout_s: float = 120.0, max_retries: int = 5,
                 max_prompt_tokens: int | None = None, resolve: bool = True):
        if not base_url:
            raise RefinerError("the openai backend needs base_url (the server's root URL, "
                               "e.g. http://127.0.0.1:8000)")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.max_concurrency = max_concurrency
        self.request_timeout_s = request_timeout_s
        self.max_retries = max_retries
        self.max_prompt_tokens = max_prompt_tokens
        super().__init__(doc_model, chunk_model, revision=revision, dialect=dialect,
                         tokenizer=tokenizer, settings={"max_prompt_tokens": max_prompt_tokens},
                         resolve=resolve)
        self.stats.update(requests=0, retries=0)
        self._lock = threading.Lock()  # statistics are updated from the request threads

    def _identity(self, model: str) -> str:
        return f"{model}@{self.revision or 'served'}"

    def prompt_limit(self, model: str) -> int | None:
        return self.max_prompt_tokens

    @functools.cached_property
    def client(self):
        try:
            import openai
        except ImportError as exc:
            raise RefinerError("the openai backend needs the openai package: "
                               "pip install 'prox-dagster[openai]'") from exc

        def count(request) -> None:  # every attempt, retries included
            with self._lock:
                self.stats["requests"] += 1

        http = openai.DefaultHttpxClient(event_hooks={"request": [count]})
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=self.api_key or "unused",
                             max_retries=self.max_retries, timeout=self.request_timeout_s,
                             http_client=http)

    def _generate(self, model: str, prompts: list[str], max_new_tokens: int) -> list[str]:
        client = self.client
        before = self.stats["requests"]
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            outputs = list(pool.map(lambda p: self._complete(client, model, p, max_new_tokens),
                                    prompts))
        with self._lock:
            self.stats["retries"] += self.stats["requests"] - before - len(prompts)
        return outputs

    def _complete(self, client, model: str, prompt: str, max_tokens: int) -> str:
        import openai

        url = f"{self.base_url}/v1/completions"
        try:
            response = client.completions.create(model=model, prompt=prompt,
                                                 max_tokens=max_tokens, temperature=0.0)
        except openai.APIStatusError as exc:
            # the body as the server sent it may echo the request's credentials
            raise RefinerError(f"{url} answered {exc.status_code} for model {model!r}: "
                               f"{redact(str(exc), (self.api_key,))[:300]}") from None
        except openai.APIConnectionError as exc:  # timeouts included
            raise RefinerError(f"{url} unreachable for model {model!r} after "
                               f"{self.max_retries + 1} attempts: "
                               f"{redact(str(exc), (self.api_key,))[:300]}") from None
        try:
            return response.choices[0].text
        except (AttributeError, IndexError, TypeError) as exc:
            raise RefinerError(f"{url} gave a malformed completion for {model!r}: {exc}"
                               ) from exc

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]
