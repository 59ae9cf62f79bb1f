"""Multi-process training: `accelerate launch` with 2 CPU processes (gloo DDP) matches one process.

Same data, seed and global batch (6 examples = 3 micro-batches of 2, so one rank also runs the zero-weight
filler batch that keeps DDP's backward passes in step). LoRA dropout is off: with it on, two ranks draw
other dropout masks than one process does, and the curves would agree only statistically.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from crash_harness import delia_argv, quiet_env, read_jsonl, tensors_close

ROOT = Path(__file__).resolve().parents[1]
CPU_DDP = ROOT / "configs" / "accelerate" / "cpu-ddp.yaml"
CPU_FSDP = ROOT / "configs" / "accelerate" / "cpu-fsdp.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accelerate_argv(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("accelerate")
    if script.exists():
        return [str(script), "launch", *args]
    return [sys.executable, "-m", "accelerate.commands.launch", *args]


@pytest.fixture()
def job(tmp_path: Path, tiny_model_dir: Path) -> tuple[Path, Path]:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Extract record {i} {'and more ' * (i % 5)}as <sep>."},
                {"role": "assistant", "content": json.dumps({"id": i, "even": i % 2 == 0})},
            ]
        }
        for i in range(30)
    ]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    config = {
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "train": {
            "batch_size": 6,
            "micro_batch_size": 2,
            "max_steps": 5,
            "max_length": 64,
            "lr": 5e-3,
            "threads": 1,
            # fp32: under bf16 autocast (on CPUs with native bf16) rounding alone moves losses by ~1e-4
            "autocast": "none",
        },
    }
    config_path = tmp_path / "train.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return data, config_path


def run(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, env=quiet_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("launch_config", [CPU_DDP, CPU_FSDP], ids=["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process(
    job: tuple[Path, Path], tmp_path: Path, launch_config: Path
) -> None:
    data, config = job
    train = ["train", "--data", str(data), "--config", str(config), "--json"]
    run(delia_argv(*train, "--out", str(tmp_path / "one")), tmp_path)
    launch = ["--config_file", str(launch_config), "--main_process_port", str(free_port())]
    stdout = run(accelerate_argv(*launch, *delia_argv(*train, "--out", str(tmp_path / "two"))), tmp_path)
    assert stdout.count('"adapter":') == 2  # both ranks ran the command to the end

    one, two = (
        read_jsonl(tmp_path / "one" / "train_log.jsonl"),
        read_jsonl(tmp_path / "two" / "train_log.jsonl"),
    )
    assert [row["step"] for row in two] == [1, 2, 3, 4, 5]  # rank 0 alone writes the log
    losses_one, losses_two = [row["loss"] for row in one], [row["loss"] for row in two]
    assert losses_one[-1] < losses_one[0]  # the curve moves, so matching it means something
    assert losses_two == pytest.approx(losses_one, abs=1e-4)
    # Without the gradient reduction each rank would step on half the batch: far beyond this tolerance.
    adapter = "adapter/adapter_model.safetensors"
    worst = tensors_close(tmp_path / "two" / adapter, tmp_path / "one" / adapter, atol=1e-5)
    print(
        f"{launch_config.stem}: losses one process {losses_one}, two processes {losses_two}; "
        f"adapter max |diff| {worst:.2e}"
    )


@pytest.mark.slow
def test_fsdp_resumes_from_its_sharded_checkpoint(job: tuple[Path, Path], tmp_path: Path) -> None:
    """Weights and AdamW state are gathered whole into the checkpoint and cut back into shards on resume."""
    data, config = job
    out = tmp_path / "fsdp"
    train = ["train", "--data", str(data), "--config", str(config), "--out", str(out), "--json"]
    launch = ["--config_file", str(CPU_FSDP), "--main_process_port", str(free_port())]
    run(accelerate_argv(*launch, *delia_argv(*train, "--set", "train.checkpoint_every=2")), tmp_path)
    adapter = out / "adapter" / "adapter_model.safetensors"
    uninterrupted = tmp_path / "uninterrupted.safetensors"
    uninterrupted.write_bytes(adapter.read_bytes())
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert [c.name for c in checkpoints] == ["step-00000004", "step-00000005"]
    shutil.rmtree(checkpoints[-1])  # as if killed after step 4's checkpoint
    shutil.rmtree(out / "adapter")
    launch = ["--config_file", str(CPU_FSDP), "--main_process_port", str(free_port())]
    resume = ["--set", "train.checkpoint_every=2", "--resume"]
    run(accelerate_argv(*launch, *delia_argv(*train, *resume)), tmp_path)
    assert tensors_close(adapter, uninterrupted, atol=1e-6) <= 1e-6
    assert [row["step"] for row in read_jsonl(out / "train_log.jsonl")][-1] == 5


def test_every_accelerate_config_loads() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {
        path.name: load_config_from_file(str(path)).distributed_type.value
        for path in sorted(CPU_DDP.parent.glob("*.yaml"))
    }
    assert kinds == {
        "cpu-ddp.yaml": "MULTI_GPU",  # MULTI_GPU starts one process per rank; the ranks run on the CPU
        "cpu-fsdp.yaml": "FSDP",
        "ddp.yaml": "MULTI_GPU",
        "deepspeed-zero2.yaml": "DEEPSPEED",
        "deepspeed-zero3.yaml": "DEEPSPEED",
        "fsdp.yaml": "FSDP",
    }


def test_deepspeed_is_refused_not_run_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    import accelerate
    from accelerate.utils import DistributedType

    from delia.core.errors import DeliaError
    from delia.train.runtime import Runtime

    class DeepSpeed:
        def __init__(self, cpu: bool) -> None:
            self.distributed_type = DistributedType("DEEPSPEED")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(accelerate, "Accelerator", DeepSpeed)
    with pytest.raises(DeliaError, match="DEEPSPEED is not supported"):
        Runtime.create("cpu")
