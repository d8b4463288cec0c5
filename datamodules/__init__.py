"""Lightning data modules of lightning_longrl (importable as ``lightning_longrl.datamodules``)."""

from lightning_longrl.datamodules.long_video import BadVideoLimitError, LongVideoDataModule

__all__ = ["BadVideoLimitError", "LongVideoDataModule"]
