"""A family's chat template fills in only where the checkpoint has none, and trains like any other."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

from delia.core.example import Example
from delia.core.families import GEMMA_CHAT_TEMPLATE, apply_family_defaults
from delia.train.collate import render_pair

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": " What is 2 + 2? "},
    {"role": "assistant", "content": "4 <sep>"},
]


def without_template(tokenizer: Any) -> Any:
    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    return bare


def test_a_gemma_checkpoint_without_a_template_gets_gemmas_turn_format(tokenizer: Any) -> None:
    bare = apply_family_defaults(without_template(tokenizer), SimpleNamespace(model_type="gemma3_text"))
    assert bare.chat_template == GEMMA_CHAT_TEMPLATE
    prompt, full = render_pair(Example(messages=CONVERSATION), bare)
    bos = bare.bos_token
    user_turn = "<start_of_turn>user\nAnswer briefly.\n\nWhat is 2 + 2?<end_of_turn>\n"
    assert prompt == f"{bos}{user_turn}<start_of_turn>model\n"
    assert full == prompt + "4 <sep><end_of_turn>\n"


def test_a_template_the_checkpoint_ships_is_kept(tokenizer: Any) -> None:
    kept = apply_family_defaults(copy.deepcopy(tokenizer), SimpleNamespace(model_type="gemma3"))
    assert kept.chat_template == tokenizer.chat_template


def test_other_families_are_left_as_they_are(tokenizer: Any) -> None:
    bare = apply_family_defaults(without_template(tokenizer), SimpleNamespace(model_type="llama"))
    assert not bare.chat_template
