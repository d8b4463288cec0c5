"""Lightning callbacks of lightning_longrl (importable as ``lightning_longrl.callbacks``)."""

from lightning_longrl.callbacks.hf_export import HFExport
from lightning_longrl.callbacks.prediction_writer import JSONLPredictionWriter

__all__ = ["HFExport", "JSONLPredictionWriter"]
