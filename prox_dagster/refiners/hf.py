"""The ``hf`` refiner: transformers ``AutoModelForCausalLM``, batched greedy generation.

Prompts are batched longest-first with left padding; float32 on CPU (bf16 is several times
slower without bf16 hardware), bfloat16 on CUDA unless ``dtype`` says otherwise. A model folder
used for both levels is loaded once.
"""

from __future__ import annotations

from .lm import LMRefiner, RefinerError


class HFRefiner(LMRefiner):
    backend = "hf"

    def __init__(self, doc_model: str, chunk_model: str | None = None, *,
                 revision: str | None = None, dialect: str = "prox", tokenizer: str | None = None,
                 device: str = "auto", dtype: str = "auto", batch_size: int = 8,
                 resolve: bool = True):
        self.device_setting, self.dtype_setting, self.batch_size = device, dtype, batch_size
        super().__init__(doc_model, chunk_model, revision=revision, dialect=dialect,
                         tokenizer=tokenizer, settings={"dtype": dtype}, resolve=resolve)
        self._models: dict[str, object] = {}

    @property
    def device(self) -> str:
        if self.device_setting != "auto":
            return self.device_setting
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _torch_dtype(self):
        import torch

        if self.dtype_setting == "auto":
            return torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        return getattr(torch, self.dtype_setting)

    def _model(self, name: str):
        if name not in self._models:
            from transformers import AutoModelForCausalLM

            try:
                model = AutoModelForCausalLM.from_pretrained(
                    name, revision=self.revision_of(name), dtype=self._torch_dtype())
            except OSError as exc:
                raise RefinerError(f"cannot load model {name!r}: {exc}") from exc
            self._models[name] = model.to(self.device).eval()
        return self._models[name]

    def prompt_limit(self, model: str) -> int | None:
        limit = getattr(self._model(model).config, "max_position_embeddings", None)
        return None if limit is None else limit - 1

    def _generate(self, model_name: str, prompts: list[str], max_new_tokens: int) -> list[str]:
        import torch

        model = self._model(model_name)
        tok = self.tokenizer
        tok.padding_side = "left"
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        limit = getattr(model.config, "max_position_embeddings", None)
        outputs: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            batch = prompts[i:i + self.batch_size]
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            enc = tok(batch, return_tensors="pt", padding=True).to(self.device)
            width = enc["input_ids"].shape[1]
            new_tokens = max_new_tokens if limit is None else max(1, min(max_new_tokens,
                                                                         limit - width))
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=new_tokens, do_sample=False,
                                     pad_token_id=pad, eos_token_id=tok.eos_token_id)
            outputs.extend(tok.batch_decode(out[:, width:], skip_special_tokens=True))
        return outputs

    def close(self) -> None:
        self._models.clear()
