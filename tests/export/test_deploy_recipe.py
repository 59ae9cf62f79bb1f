"""docs/deploy.md's recipe, run as written in a fresh interpreter with transformers and peft alone, loads a
trained adapter and answers exactly as delia's own loader does (issue 19: loading the adapter elsewhere)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from delia.methods import load_trained

DEPLOY_DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
MARKER = "<!-- recipe: transformers + peft"
PROMPT = "Text 5: Ana is a pilot in Porto. Answer in the <sep> format."
TOKENS = 12
HARNESS = """
import json, sys
adapter, base, prompt = sys.argv[1:4]
{recipe}
ids = tokenizer.apply_chat_template(
    [{{"role": "user", "content": prompt}}], add_generation_prompt=True, return_tensors="pt", return_dict=True
)
out = model.generate(**ids, max_new_tokens={tokens}, min_new_tokens={tokens}, do_sample=False)
loaded = sorted({{name.split(".")[0] for name in sys.modules}})
print(json.dumps({{"tokens": out[0, ids["input_ids"].shape[1]:].tolist(), "modules": loaded}}))
"""


def recipe() -> str:
    """The first python block after the recipe marker in docs/deploy.md."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    assert MARKER in text, f"{DEPLOY_DOC} lost its recipe marker"
    match = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.DOTALL)
    assert match is not None
    return match.group(1)


def delia_answer(adapter_dir: Path) -> list[int]:
    model, tokenizer = load_trained("", adapter_dir)
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False)
    return out[0, ids["input_ids"].shape[1] :].tolist()


def test_the_documented_recipe_loads_and_generates_without_delia(tied_run: Any, tmp_path: Path) -> None:
    code = recipe()
    assert code.index("resize_token_embeddings") < code.index("PeftModel.from_pretrained")  # resize first
    script = HARNESS.format(recipe=code, tokens=TOKENS)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    args = [sys.executable, "-c", script, str(tied_run.adapter_dir), str(tied_run.base_dir), PROMPT]
    done = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "delia" not in result["modules"]
    assert result["tokens"] == delia_answer(tied_run.adapter_dir)
