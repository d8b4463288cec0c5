"""Multi-modal sequence parallelism (MR-SP, section 5 of the paper): frames split across ranks for
the vision tower, and the language model's prefill split along the sequence (Ulysses attention)."""

from lightning_longrl.parallel.strategy import MRSPStrategy

__all__ = ["MRSPStrategy"]
