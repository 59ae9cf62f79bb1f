"""The real SmolLM2 tokenizer with `<sep>` added survives the GGUF metadata round trip: transformers rebuilds
a tokenizer from the file that encodes chat prompts, special tokens and odd text exactly as delia's does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import tiny_llama

from delia.core.config import TokensConfig
from delia.core.models import load_tokenizer
from delia.export.gguf_file import write_gguf_file
from delia.train.tokens import add_special_tokens

TEXTS = [
    "  Leading spaces, numbers 1234567 and ünïcödé,\ttabs\n\nand <sep> mid-sentence.",
    "<|im_start|>user\nAnswer in the <sep> format.<|im_end|>\n",
]


def test_smollm2_tokenizer_with_sep_round_trips(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer: Any = load_tokenizer("smollm2-135m-instruct")
    model = tiny_llama(len(tokenizer))
    (sep,) = add_special_tokens(model, tokenizer, TokensConfig(add=["<sep>"]))
    path = tmp_path / "model.gguf"
    write_gguf_file(model, tokenizer, path, "float16", "tiny", pre="smollm")
    rebuilt = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    assert len(rebuilt) == len(tokenizer) == sep + 1
    assert rebuilt.added_tokens_decoder[sep].content == "<sep>" and rebuilt.added_tokens_decoder[sep].special
    messages = [{"role": "user", "content": "Is the sky green? Answer in the <sep> format."}]
    chat = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    for text in [*TEXTS, chat]:
        assert rebuilt(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert rebuilt.decode(tokenizer(TEXTS[0])["input_ids"]) == TEXTS[0]
