"""The backend registry: each backend module registers itself; importing the package loads no torch."""

from __future__ import annotations

import subprocess
import sys

from delia.core.registry import BACKENDS, METRICS


def test_every_backend_and_metric_is_registered() -> None:
    assert BACKENDS.names() == ["local", "openai", "vllm"]
    assert METRICS.names() == ["exact", "json_format", "translation"]


def test_importing_the_generation_package_does_not_import_torch() -> None:
    probe = "import sys, delia.generation, delia.evaluate.metrics; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
