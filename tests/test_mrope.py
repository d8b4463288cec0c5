import pytest
import torch

from lightning_longrl.models.mrope import mrope_position_ids

V = 9  # video token id in these hand-made sequences


def test_qwen25_style_block_with_temporal_scale():
    # 2 text tokens, then a video with grid t=3, h=w=2 (3 tokens after the 2x2 merge), then 2 text tokens
    ids = torch.tensor([[1, 2, V, V, V, 3, 4]])
    pos = mrope_position_ids(ids, torch.ones_like(ids), V, torch.tensor([[3, 2, 2]]), 2, temporal_scale=torch.tensor([2.5]))
    expected = torch.tensor([
        [0, 1, 2, 4, 7, 8, 9],  # temporal: 2 + floor(k * 2.5); text resumes at max + 1 = 8
        [0, 1, 2, 2, 2, 8, 9],
        [0, 1, 2, 2, 2, 8, 9],
    ])
    assert torch.equal(pos[:, 0], expected)


def test_unscaled_block_and_text_after_uses_max_plus_one():
    ids = torch.tensor([[1] + [V] * 8 + [3]])  # grid t=2, h=4, w=4 -> 2*2*2 = 8 tokens
    pos = mrope_position_ids(ids, torch.ones_like(ids), V, torch.tensor([[2, 4, 4]]), 2)
    t, h, w = pos[:, 0]
    assert t.tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert h.tolist() == [0, 1, 1, 2, 2, 1, 1, 2, 2, 3]
    assert w.tolist() == [0, 1, 2, 1, 2, 1, 2, 1, 2, 3]


def test_frame_blocks_with_text_between():
    # Qwen3-VL: each temporal patch is its own block, separated by timestamp text
    ids = torch.tensor([[1, V, V, 5, V, V, 2]])  # grid t=2, h=2, w=4 -> 2 tokens per temporal patch
    pos = mrope_position_ids(ids, torch.ones_like(ids), V, torch.tensor([[2, 2, 4]]), 2, frame_blocks=True)
    # block 1 at 1 (w spans 1..2), text resumes at 3, block 2 at 4 (w spans 4..5), text at 6
    assert pos[0, 0].tolist() == [0, 1, 1, 3, 4, 4, 6]
    assert pos[1, 0].tolist() == [0, 1, 1, 3, 4, 4, 6]
    assert pos[2, 0].tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_left_padding_and_batch_rows_consume_videos_in_order():
    ids = torch.tensor([[0, 0, 1, V, V, 2], [1, V, V, V, V, 2]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    grids = torch.tensor([[1, 2, 4], [1, 4, 4]])
    pos = mrope_position_ids(ids, mask, V, grids, 2)
    assert pos[:, 0, :2].eq(0).all()
    assert pos[2, 0, 2:].tolist() == [0, 1, 2, 3]
    assert pos[1, 1].tolist() == [0, 1, 1, 2, 2, 3]
    assert pos[2, 1].tolist() == [0, 1, 2, 1, 2, 3]


def test_mismatched_grid_is_an_error():
    ids = torch.tensor([[1, V, V, V]])
    with pytest.raises(ValueError, match="does not match grid"):
        mrope_position_ids(ids, torch.ones_like(ids), V, torch.tensor([[1, 4, 4]]), 2)
    with pytest.raises(ValueError, match="1 of 2 videos"):
        mrope_position_ids(ids[:, :2], torch.ones_like(ids[:, :2]), V, torch.tensor([[1, 2, 2], [1, 2, 2]]), 2)
