"""Small Llama refiners built and trained locally: for tests, benchmarks and distillation.

:func:`build_llama` writes a randomly initialised Llama of any shape (a few layers for tests, the
0.35B ProX refiner shape for benchmarks) with a tokenizer, via ``save_pretrained``: nothing comes
from a hub. :func:`train_refiner` fine-tunes such a model on (prompt -> program) pairs: the loss
covers the program tokens and the EOS only, so the model learns to write programs and stop.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path


PROX_REFINER_SHAPE = {"hidden_size": 1280, "num_hidden_layers": 24, "num_attention_heads": 16,
                      "num_key_value_heads": 1, "intermediate_size": 2048, "vocab_size": 32000}
TINY_SHAPE = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 1, "intermediate_size": 512}  # head_dim 64: vLLM CPU needs it


def build_llama(out_dir: str | Path, tokenizer, *, seed: int = 0,
                max_position_embeddings: int = 4096, **shape) -> Path:
    """Save a randomly initialised Llama of ``shape`` (default :data:`TINY_SHAPE`) and
    ``tokenizer`` to ``out_dir``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = {**TINY_SHAPE, **shape}
    shape.setdefault("vocab_size", len(tokenizer))
    config = LlamaConfig(**shape, max_position_embeddings=max_position_embeddings,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def train_refiner(model_dir: str | Path, pairs: Sequence[tuple[str, str]], *, steps: int = 300,
                  batch_size: int = 8, lr: float = 3e-3, max_length: int = 512,
                  seed: int = 0, progress=None) -> Path:
    """Fine-tune the model in ``model_dir`` in place on ``pairs``; returns ``model_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.train()
    examples = []
    for prompt, program in pairs:
        prompt_ids = tok(prompt, add_special_tokens=True)["input_ids"]
        target = tok(program, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = (prompt_ids + target)[-max_length:]
        labels = ([-100] * len(prompt_ids) + target)[-max_length:]
        examples.append((ids, labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    # decayed linearly to zero: the last steps settle instead of jumping around the minimum
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for step in range(steps):
        batch = rng.sample(examples, min(batch_size, len(examples)))
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in batch])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in batch])
        # the loss covers only program tokens: project just those positions to the vocabulary
        hidden = model.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        targets = labels[:, 1:]
        scored = targets != -100
        logits = model.lm_head(hidden[:, :-1][scored])
        loss = torch.nn.functional.cross_entropy(logits, targets[scored])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if progress:
            progress(step + 1, steps, loss.item())
    model.save_pretrained(str(model_dir))
    return Path(model_dir)
