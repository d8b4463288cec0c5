"""lightning_longrl: chain-of-thought SFT and GRPO for vision-language models on long videos."""

__version__ = "0.1.0"

from lightning_longrl.stages.grpo import GRPOModule  # noqa: E402
from lightning_longrl.stages.sft import SFTModule  # noqa: E402

__all__ = ["GRPOModule", "SFTModule", "__version__"]
