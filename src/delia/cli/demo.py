"""`delia demo` (what `make demo` runs): common IT vs DELIA vs compute-matched common IT, on the embedded
model, offline; prints the comparison table and the run directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from delia.cli._common import console


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        config: Path | None = typer.Option(
            None, "--config", help="Demo preset (default: configs/demo.yaml)."
        ),
        out: Path | None = typer.Option(
            None, "--out", help="Directory for the runs (default: the preset's)."
        ),
        overrides: list[str] = typer.Option([], "--set", help="Override a preset value (repeatable)."),
        fresh: bool = typer.Option(False, "--fresh", help="Delete earlier demo runs first (no cache)."),
    ) -> None:
        """Train common IT, DELIA and common IT matched to DELIA's steps on the demo task; compare them."""
        from delia.cli.run import summary_table
        from delia.core.config import load_config
        from delia.demo import LEGEND, demo_config_path, run_demo

        preset = demo_config_path(config)
        root = out or Path(load_config(preset, overrides).run_dir)
        if fresh and root.exists():
            shutil.rmtree(root)
        rows, root, seconds = run_demo(
            preset, root, overrides, log=lambda line: console.print(line, highlight=False)
        )
        console.print(summary_table(rows, "delia demo: held-out extraction and side effects"))
        console.print(LEGEND, highlight=False)
        console.print(f"run directory: {root}  (summary: {root / 'summary.md'}; {seconds:.0f} s)")
