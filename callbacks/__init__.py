"""Lightning callbacks of lightning_longrl (importable as ``lightning_longrl.callbacks``)."""

from lightning_longrl.callbacks.embedding_cache import EmbeddingCacheInvalidation
from lightning_longrl.callbacks.hf_export import HFExport
from lightning_longrl.callbacks.metrics_file import MetricsJSON
from lightning_longrl.callbacks.prediction_writer import JSONLPredictionWriter
from lightning_longrl.callbacks.rollout_samples import RolloutSampleLogger
from lightning_longrl.callbacks.vllm_sync import VLLMWeightSync

__all__ = ["EmbeddingCacheInvalidation", "HFExport", "JSONLPredictionWriter", "MetricsJSON", "RolloutSampleLogger",
           "VLLMWeightSync"]
