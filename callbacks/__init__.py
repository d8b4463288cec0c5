"""Lightning callbacks of lightning_longrl (importable as ``lightning_longrl.callbacks``)."""

from lightning_longrl.callbacks.hf_export import HFExport

__all__ = ["HFExport"]
