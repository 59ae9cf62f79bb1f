"""`make demo`: common instruction tuning vs DELIA vs compute-matched common IT (and the base model) on the
project's own field-extraction task, plus a check of what training did to everything else.

Every leg is an ordinary pipeline run (cached per stage) in one directory; the extra checks are one more
cached stage per run (`general/`): ordinary questions with known answers (is general ability kept? are
they now answered in the task's JSON format?) and the demo sentences asked about *without* `<sep>` (is
the format used only when asked for?).
"""

from __future__ import annotations

import json
import re
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from delia.core.config import RunConfig, SamplingConfig, load_config
from delia.core.errors import ConfigError
from delia.core.io import atomic_write
from delia.core.markdown import markdown_table
from delia.core.registry import STAGES
from delia.core.stage import Stage, StageContext
from delia.data.builders.demo import DEMO_KEYS, build_demo
from delia.data.io import write_jsonl
from delia.evaluate.jsonfmt import parse_answer
from delia.methods import load_trained
from delia.pipeline import run, summary_row
from delia.pipeline.cache import Log, read_manifest, run_stage
from delia.pipeline.context import RunContext
from delia.probe.general import GENERAL_QUESTIONS, looks_like_json, whole_word

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LEGS = ("base", "common_it", "delia", "common_it_matched")

PLAIN_QUESTION = "In which city does the person in this sentence live or work? Answer in a few words."
PLAIN_EXAMPLES = 8
PROBE_VERSION = 2  # bump when prompts or scoring change: cached probe stages then rerun
PROBE_TOKENS = 24  # enough for a short factual answer; a JSON answer shows in its first token


LEGEND = (
    "n: training examples; steps: optimizer steps; secs: training time. "
    "format: held-out answers in the <sep> format (a dict with name, city, job), on sentences with unseen "
    "names, cities and jobs and unseen instruction phrasings; fields: all three values exactly right. "
    f"QA: {len(GENERAL_QUESTIONS)} ordinary questions answered with the known fact; QA-json: share of them "
    f"answered in JSON anyway (format leakage). city / city-json: {PLAIN_EXAMPLES} held-out sentences asked "
    "about in plain words, without <sep>: city named / answered in JSON."
)


def demo_config_path(path: str | Path | None) -> Path:
    """The given config, else configs/demo.yaml here or in the source checkout."""
    if path is not None:
        return Path(path)
    here = Path("configs/demo.yaml")
    checkout = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    for candidate in (here, checkout):
        if candidate.exists():
            return candidate
    raise ConfigError("demo", "configs/demo.yaml not found: run from the repository root or pass --config")


def leg_configs(base: RunConfig, out_dir: Path) -> list[RunConfig]:
    """One config per leg: only the method (and name) differ, so the task data are the same."""
    legs = []
    for method in LEGS:
        leg = base.model_copy(deep=True)
        leg.method, leg.name, leg.run_dir = method, method, str(out_dir)
        if method == "common_it_matched":
            leg.matched_to = str(out_dir / "delia")
        legs.append(leg)
    return legs


def general_probe_prompts(config: RunConfig) -> tuple[list[list[dict[str, str]]], list[dict[str, Any]]]:
    prompts, expected = [], []
    for question, answers in GENERAL_QUESTIONS:
        prompts.append([{"role": "user", "content": question}])
        expected.append({"kind": "general", "question": question, "answers": list(answers)})
    options = {**config.eval.builder_options, "n": PLAIN_EXAMPLES, "offset": 0}
    for example in build_demo(None, options, "demo"):
        fields = example.meta["fields"]
        prompts.append([{"role": "user", "content": f"{example.meta['sentence']}\n\n{PLAIN_QUESTION}"}])
        expected.append({"kind": "plain", "question": PLAIN_QUESTION, "answers": [fields["city"].lower()]})
    return prompts, expected


def score_probe(
    predictions: list[str], expected: list[dict[str, Any]]
) -> tuple[dict[str, float], list[dict]]:
    rows = []
    for prediction, item in zip(predictions, expected, strict=True):
        lowered = prediction.lower()
        correct = any(re.search(whole_word(answer), lowered) for answer in item["answers"])
        rows.append(
            {**item, "prediction": prediction, "correct": correct, "json": looks_like_json(prediction)}
        )

    def rate(kind: str, key: str) -> float:
        chosen = [r[key] for r in rows if r["kind"] == kind]
        return round(sum(chosen) / len(chosen), 4) if chosen else 0.0

    figures = {
        "general_correct": rate("general", "correct"),
        "general_json": rate("general", "json"),
        "plain_correct": rate("plain", "correct"),
        "plain_json": rate("plain", "json"),
    }
    return figures, rows


def general_key(config: RunConfig, run_dir: Path) -> str:
    """The probe's key: the model, the trained adapter's key, and everything the probe asks and scores."""
    train = read_manifest(run_dir / "train")
    upstream = (train["hash"] if train else "untrained", json.dumps(GENERAL_QUESTIONS), PLAIN_QUESTION)
    probe = (str(config.eval.builder_options), f"{PROBE_TOKENS}:{PROBE_VERSION}")
    return config.stage_hash(*GENERAL.sections, upstream=(*upstream, *probe))


def compute_general(context: StageContext, out: Path) -> dict[str, Any]:
    """The retention / format-leakage check for one finished run."""
    from delia.generation.local import LocalBackend  # torch

    config = context.config
    model, tokenizer = run_model(context)
    prompts, expected = general_probe_prompts(config)
    backend = LocalBackend(model, tokenizer, batch_size=config.eval.batch_size, progress=False)
    predictions = backend.generate(prompts, SamplingConfig(temperature=0.0, max_new_tokens=PROBE_TOKENS))
    figures, rows = score_probe(predictions, expected)
    write_jsonl(out / "predictions.jsonl", rows)
    return {"counts": {"prompts": len(prompts)}, "metrics": figures}


def run_model(context: StageContext) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The run's trained model, or the base model for a leg that does not train."""
    adapter = context.dir / "train" / "adapter"
    if adapter.exists():
        return load_trained(context.config.model.name, adapter, device=context.config.model.device)
    return context.base_model()


GENERAL = STAGES.register("general")(Stage("general", ("model",), compute_general, upstream=("train",)))


def stage_general(run_dir: Path, config: RunConfig, log: Log) -> dict[str, float]:
    """The general check of one finished run, cached in `general/` like any stage."""
    compute = partial(GENERAL.compute, RunContext(config, run_dir, log))
    return run_stage(run_dir, GENERAL.name, general_key(config, run_dir), compute, log=log).manifest[
        "metrics"
    ]


def field_accuracy(run_dir: Path) -> float | None:
    """Share of held-out answers with every field (name, city, job) exactly right."""
    path = run_dir / "eval" / "predictions.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    correct = 0
    for row in rows:
        predicted, _ = parse_answer(row["prediction"])
        reference, _ = parse_answer(row["reference"] or "")
        if predicted and reference:
            correct += all(str(predicted.get(k, "")).strip() == str(reference[k]) for k in DEMO_KEYS)
    return round(correct / len(rows), 4) if rows else None


def comparison_row(run_dir: Path, general: dict[str, float]) -> dict[str, Any]:
    """Short column names: the table must fit an 80-column terminal (docs/demo.md explains each)."""
    summary = summary_row(run_dir)
    seconds = summary["train s"]
    return {
        "method": summary["method"],
        "n": summary["train examples"],
        "steps": summary["steps"],
        "secs": round(seconds) if seconds is not None else None,
        "format": summary.get("json_format"),
        "fields": field_accuracy(run_dir),
        "QA": general["general_correct"],
        "QA-json": general["general_json"],
        "city": general["plain_correct"],
        "city-json": general["plain_json"],
    }


def run_demo(
    config_path: str | Path | None = None,
    out_dir: str | Path | None = None,
    overrides: list[str] | None = None,
    log: Log = print,
) -> tuple[list[dict[str, Any]], Path, float]:
    """Run every leg, then the general check; return the comparison rows, the directory, the seconds."""
    start = time.perf_counter()
    base = load_config(demo_config_path(config_path), overrides)
    root = Path(out_dir or base.run_dir)
    rows = []
    for leg in leg_configs(base, root):
        log(f"== {leg.method}")
        run_dir = run(leg, log=lambda line, name=leg.name: log(f"[{name}] {line}"))
        general = stage_general(run_dir, leg, lambda line, name=leg.name: log(f"[{name}] {line}"))
        rows.append(comparison_row(run_dir, general))
    seconds = time.perf_counter() - start
    write_demo_summary(root, rows, seconds)
    return rows, root, seconds


def write_demo_summary(root: Path, rows: list[dict[str, Any]], seconds: float) -> None:
    text = (
        "# delia demo\n\n"
        f"{markdown_table(rows)}\n\n"
        f"{LEGEND}\n\n"
        f"Wall time of this invocation: {seconds:.0f} s.\n"
    )
    atomic_write(root / "summary.md", text)
