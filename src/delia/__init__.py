"""delia: Diversity-Enhanced Learning for Instruction Adaptation (arXiv 2408.10841)."""

__version__ = "0.1.0"
