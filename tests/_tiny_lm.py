"""Tiny random-weight Llama models and a character tokenizer with a chat template, for fast
unit tests of the local backend (like steering-vectors' conftest: models built from configs)."""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]
CHARS = list(string.ascii_letters + string.digits + string.punctuation + " \n")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character; <|im_end|> ends a turn (the stop token), <pad> pads."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    inner = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    inner.decoder = decoders.Fuse()
    inner.add_special_tokens(SPECIALS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=inner,
        pad_token="<pad>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        bos_token="<|im_start|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_model(
    seed: int = 0, layers: int = 4, hidden: int = 64, vocab: int | None = None
) -> LlamaForCausalLM:
    """A random-init Llama small enough to run a forward pass in milliseconds."""
    n_vocab = vocab or len(SPECIALS) + len(CHARS)
    cfg = LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=SPECIALS.index("<|im_end|>"),
        pad_token_id=0,
        bos_token_id=1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    # Larger output weights make the next-token distribution peaked enough that sampling and
    # greedy decoding produce varied text rather than near-uniform noise.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    return model.eval()


class MemoryResolutionCache:
    """A ResolutionCache in a dict (the collector's lives on disk), counting computations."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.computed = 0

    async def get_or_compute(self, namespace, key, compute):  # type: ignore[no-untyped-def]
        import json

        k = json.dumps([namespace, key], sort_keys=True, default=str)
        if k not in self.values:
            self.values[k] = await compute()
            self.computed += 1
        return self.values[k]
