"""Video-embedding cache: encode each video once and reuse it for every rollout and every pass.

Entries are keyed by a namespace (whose vision tower encoded it: the policy's or the reference
model's), the video key (file, clip and the timestamps and size of the sampled frames, see
:func:`lightning_longrl.data.collate.media_key`) and the version of that tower's weights.
:meth:`VideoEmbeddingCache.invalidate` bumps the version, which the
:class:`~lightning_longrl.callbacks.EmbeddingCacheInvalidation` callback does after optimizer
steps that change the vision weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lightning_longrl.models.video_lm import VideoEmbeddings


@dataclass
class EmbeddingCacheConfig:
    """How video embeddings are cached during RL."""

    enabled: bool = True
    """Off: re-encode the video for every rollout and every forward pass (how other RL frameworks
    do it), to measure what the cache saves."""
    max_videos: int | None = 512
    """Keep at most this many videos' embeddings (least recently used are dropped); ``None``: no bound."""
    offload_to_cpu: bool = False
    """Store entries in CPU memory and move them to the device on use (saves accelerator memory
    when the vision tower is frozen and entries outlive a step)."""
    save_in_checkpoint: bool = True
    """Write entries into checkpoints, so a resumed run continues with the same cache state (turn
    off for real models, where entries are large; they are then recomputed on demand)."""

    def __post_init__(self) -> None:
        if self.max_videos is not None and self.max_videos < 1:
            raise ValueError(f"embedding cache max_videos must be >= 1 or None, got {self.max_videos}")


Key = tuple[str, str, int]  # (namespace, video key, weight version)


class VideoEmbeddingCache:
    """An LRU store of per-video :class:`VideoEmbeddings` with encoder-call accounting."""

    def __init__(self, config: EmbeddingCacheConfig | None = None) -> None:
        self.config = config or EmbeddingCacheConfig()
        self.versions: dict[str, int] = {}
        self._entries: OrderedDict[Key, VideoEmbeddings] = OrderedDict()
        self.encoded_videos = 0  # videos sent through a vision tower since the last reset_counters()
        self.encoder_calls = 0  # vision-tower invocations since the last reset_counters()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def version(self, namespace: str) -> int:
        return self.versions.get(namespace, 0)

    def invalidate(self, namespace: str = "policy") -> None:
        """The namespace's vision weights changed: its entries are no longer valid."""
        self.versions[namespace] = self.version(namespace) + 1
        for key in [k for k in self._entries if k[0] == namespace]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def reset_counters(self) -> None:
        self.encoded_videos = self.encoder_calls = self.hits = 0

    def get(
        self,
        namespace: str,
        media_keys: Sequence[str],
        encode: Callable[[list[int]], list[VideoEmbeddings]],
        device: torch.device | None = None,
    ) -> list[VideoEmbeddings]:
        """Embeddings of the questions' media ``media_keys``, encoding only those not cached.

        Args:
            namespace: whose vision tower (``"policy"`` or ``"ref"``).
            media_keys: one key per question (its video, its images, or "text:"), in batch order.
            encode: encodes the videos at the given batch positions in one call and returns
                their embeddings in that order.
            device: where returned embeddings live (entries offloaded to CPU are moved here).
        """
        if not self.config.enabled:
            return self.encode_uncached(encode, list(range(len(media_keys))))
        version = self.version(namespace)
        keys = [(namespace, k, version) for k in media_keys]
        # one encode per distinct missing video (several questions may share a video)
        first_of: dict[Key, int] = {}
        for i, key in enumerate(keys):
            if key not in self._entries:
                first_of.setdefault(key, i)
        fresh = self.encode_uncached(encode, list(first_of.values())) if first_of else []
        for key, emb in zip(first_of, fresh):
            self._store(key, emb)
        self.hits += len(keys) - len(first_of)
        out = []
        for key in keys:
            self._entries.move_to_end(key)
            emb = self._entries[key]
            out.append(emb.to(device) if device is not None else emb)
        self._evict()
        return out

    def encode_uncached(self, encode: Callable[[list[int]], list[VideoEmbeddings]], positions: list[int]) -> list[VideoEmbeddings]:
        """Encode without storing (e.g. with gradients for a trainable tower), counting the work."""
        self.encoder_calls += 1
        self.encoded_videos += len(positions)
        return encode(positions)

    def _store(self, key: Key, emb: VideoEmbeddings) -> None:
        emb = emb.detach()
        self._entries[key] = emb.to("cpu") if self.config.offload_to_cpu else emb

    def _evict(self) -> None:
        limit = self.config.max_videos
        while limit is not None and len(self._entries) > limit:
            self._entries.popitem(last=False)

    # ----------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        entries = []
        if self.config.save_in_checkpoint:
            for (namespace, video, version), emb in self._entries.items():
                entries.append({"namespace": namespace, "video": video, "version": version, **emb.state_dict()})
        return {"versions": dict(self.versions), "entries": entries}

    def load_state_dict(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        self.versions = {str(k): int(v) for k, v in state.get("versions", {}).items()}
        self._entries.clear()
        target = torch.device("cpu") if self.config.offload_to_cpu or device is None else device
        for e in state.get("entries", []):
            if "seconds_per_patch" not in e:  # written before entries kept their timing: encoded again on demand
                continue
            key = (e["namespace"], e["video"], int(e["version"]))
            self._entries[key] = VideoEmbeddings.from_state_dict(e).to(target)
