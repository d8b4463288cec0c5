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


def test_gradient_buckets_keep_order_dtype_and_size():
    from lightning_longrl.parallel.strategy import gradient_buckets

    grads = [torch.zeros(10), torch.zeros(10), torch.zeros(30), torch.zeros(4, dtype=torch.float64), torch.zeros(2)]
    buckets = gradient_buckets(grads, bucket_bytes=80)  # 20 float32 elements per bucket
    assert [[id(g) for g in b] for b in buckets] == [[id(grads[0]), id(grads[1])], [id(grads[2])], [id(grads[3])],
                                                     [id(grads[4])]]
    assert gradient_buckets([], 80) == []
