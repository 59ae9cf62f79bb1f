"""What a model family needs beyond what its checkpoint carries: the one place for architecture quirks.

Everything else delia does is architecture-generic and reads the config, not the family:
  tied embeddings     new token rows are written into the input embedding and an untied head
                      (train/tokens.py) and trained there (train/lora.py); a tied head follows the embedding
  logit soft-capping  `final_logit_softcapping` / `logit_scale` from the config (train/loss.py)
  sliding windows     the `sliding_window` each attention layer passes (train/attention.py)
  scaled embeddings   Gemma multiplies embeddings by sqrt(hidden) inside its embedding module, so rows
                      written into the weight go through the same scale as every other token
What a checkpoint can lack is its chat template: a GGUF of a pretrained (not instruction-tuned) model,
such as the packaged Gemma 3 270M, has none, and delia trains and generates through chat templates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Gemma 3's own turn format (google/gemma-3-270m-it's template, text only): "assistant" is the "model"
# turn, a system message is prefixed to the first user turn, each turn ends with <end_of_turn>.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<start_of_turn>model\n' }}"
    "{%- endif -%}"
)

CHAT_TEMPLATES = {"gemma3": GEMMA_CHAT_TEMPLATE, "gemma3_text": GEMMA_CHAT_TEMPLATE}


def apply_family_defaults(tokenizer: PreTrainedTokenizerBase, config: Any) -> PreTrainedTokenizerBase:
    """Give a tokenizer without a chat template its family's own; a template the checkpoint ships wins."""
    template = CHAT_TEMPLATES.get(getattr(config, "model_type", ""))
    if template is not None and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = template
    return tokenizer
