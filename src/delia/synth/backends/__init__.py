"""Generation backends behind one interface: `generate(prompts, sampling) -> completions`."""

from delia.synth.backends.base import Backend, GenerationStats, Message
from delia.synth.backends.local import LocalBackend

__all__ = ["Backend", "GenerationStats", "LocalBackend", "Message"]
