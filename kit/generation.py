"""Batched generation with the chat template, for format checks, evaluation and the demo."""

from __future__ import annotations


def prompt_texts(tokenizer, prompts: list[list[dict]], enable_thinking: bool = True) -> list[str]:
    return [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True,
                                          enable_thinking=enable_thinking) for p in prompts]


def generate(model, tokenizer, prompts: list[list[dict]], *, max_new_tokens: int = 128,
             enable_thinking: bool = True, do_sample: bool = False, temperature: float = 1.0,
             top_p: float = 1.0, top_k: int = 0, batch_size: int = 8, seed: int = 0) -> list[str]:
    """Completions (special tokens kept, padding removed) for chat prompts, in order."""
    import torch

    texts = prompt_texts(tokenizer, prompts, enable_thinking)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only: pad on the left so generation continues the prompt
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    out: list[str] = []
    try:
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(model.device)
            kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            if do_sample:
                kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            with torch.no_grad():
                ids = model.generate(**batch, **kwargs)
            for row in ids[:, batch["input_ids"].shape[1]:]:
                row = row.tolist()
                while row and row[-1] == tokenizer.pad_token_id:
                    row.pop()
                out.append(tokenizer.decode(row, skip_special_tokens=False))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return out
