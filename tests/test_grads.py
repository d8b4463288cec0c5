"""clip_grad_norm (sharded and replicated gradients together) agrees with torch's own clipping on
plain parameters; the mixed case is covered by the sharded runs in tests/test_sequence_parallel.py."""

import torch

from lightning_longrl.parallel.grads import clip_grad_norm


def _params(seed: int, scale: float) -> list[torch.nn.Parameter]:
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(n)) for n in (7, 130, 33)]
    for p in params:
        p.grad = torch.randn_like(p) * scale
    return params


def test_matches_torch_clipping():
    for scale, max_norm in [(3.0, 1.0), (0.01, 1.0)]:  # clipped, and left alone
        ours, theirs = _params(0, scale), _params(0, scale)
        norm = clip_grad_norm(ours, max_norm)
        expected = float(torch.nn.utils.clip_grad_norm_(theirs, max_norm))
        assert abs(norm - expected) <= 1e-5 * expected
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)
