"""explorer.nn.positional against closed forms, the papers and transformers' T5 buckets."""

import math
import os

import pytest
import torch

from explorer.nn.attention import apply_rotary
from explorer.nn.positional import (
    LearnedPositions,
    RelativePositionBias,
    Rotary,
    SinusoidalPositions,
    alibi_bias,
    alibi_slopes,
    relative_position_bucket,
    rope_inv_freq,
    sinusoidal_table,
)

torch.set_num_threads(1)


def test_sinusoidal_table_equals_closed_form():
    n_ctx, d_model = 12, 10
    table = sinusoidal_table(n_ctx, d_model)
    assert table.shape == (n_ctx, d_model)
    for pos in range(n_ctx):
        for i in range(d_model // 2):
            angle = pos / 10000.0 ** (2 * i / d_model)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_table_custom_base_and_module():
    table = sinusoidal_table(4, 4, base=100.0)
    assert table[3, 2].item() == pytest.approx(math.sin(3 / 100.0 ** 0.5), abs=1e-6)
    module = SinusoidalPositions(8, 4)
    assert not list(module.parameters())
    torch.testing.assert_close(module(torch.tensor([5, 0])), sinusoidal_table(8, 4)[[5, 0]])


def test_learned_positions_is_a_table():
    module = LearnedPositions(6, 4)
    assert module.weight.shape == (6, 4)
    torch.testing.assert_close(module(torch.tensor([2])), module.weight[2:3])


def test_rope_inv_freq_and_rotary_angles():
    inv = rope_inv_freq(8, base=100.0)
    torch.testing.assert_close(inv, torch.tensor([100.0 ** (-i / 8) for i in (0, 2, 4, 6)]))
    cos, sin = Rotary(8, base=100.0)(torch.arange(3), torch.float32)
    assert cos.shape == sin.shape == (3, 8)
    angle = 2 * 100.0 ** (-2 / 8)  # position 2, pair 1 (dims 1 and 5)
    assert cos[2, 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert sin[2, 5].item() == pytest.approx(math.sin(angle), abs=1e-6)


def rotate(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    cos, sin = Rotary(x.shape[-1], base).double()(positions, torch.float64)
    return apply_rotary(x, cos, sin)


def test_rope_rotates_pairs_i_and_i_plus_half():
    x = torch.zeros(1, 1, 1, 4, dtype=torch.float64)
    x[..., 0] = 1.0  # pair (0, 2) at speed 1: rotating by angle p
    out = rotate(x, torch.tensor([1]))
    assert out.flatten().tolist() == pytest.approx([math.cos(1), 0, math.sin(1), 0])


def test_rope_preserves_norms():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 16, dtype=torch.float64)
    out = rotate(x, torch.arange(7))
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))


def test_rope_dot_product_depends_only_on_offset():
    torch.manual_seed(1)
    q, k = torch.randn(2, 1, 1, 1, 16, dtype=torch.float64)
    dots = {}
    for i in range(10):
        for j in range(10):
            rq = rotate(q, torch.tensor([i]), base=50.0)
            rk = rotate(k, torch.tensor([j]), base=50.0)
            dots.setdefault(i - j, []).append((rq * rk).sum().item())
    for offset, values in dots.items():
        assert max(values) - min(values) < 1e-10, offset
    assert len({round(v[0], 6) for v in dots.values()}) == len(dots)  # offsets differ


def test_alibi_slopes_for_eight_heads():
    assert alibi_slopes(8).tolist() == [2.0 ** -i for i in range(1, 9)]


def test_alibi_slopes_other_head_counts():
    assert alibi_slopes(4).tolist() == pytest.approx([2.0 ** -(2 * i) for i in range(1, 5)])
    # 12 heads: the 8 slopes of 8 heads, then every other of the 16-head ones
    sixteen = [2.0 ** -(i / 2) for i in range(1, 17)]
    assert alibi_slopes(12).tolist() == pytest.approx(
        [2.0 ** -i for i in range(1, 9)] + sixteen[0::2][:4]
    )


def test_alibi_bias_is_minus_slope_times_distance():
    slopes = torch.tensor([0.5, 0.25])
    bias = alibi_bias(slopes, 3)
    assert bias.shape == (1, 2, 3, 3)
    assert bias[0, 0].tolist() == [[0, -0.5, -1.0], [-0.5, 0, -0.5], [-1.0, -0.5, 0]]
    last = alibi_bias(slopes, 1, 4)  # the last query of 4 positions
    assert last[0, 1, 0].tolist() == [-0.75, -0.5, -0.25, 0]


# Hand-checked against T5's definition (32 buckets, max distance 128). Bidirectional: 16
# buckets per direction, 8 exact (0..7), then log-spaced 8 + floor(log(d/8)/log(16) * 8);
# positive relative positions (key after query) add 16. Causal: 32 buckets for past
# keys only, 16 exact, then 16 + floor(log(d/16)/log(8) * 16); future keys are bucket 0.
T5_TABLE = {
    # relative position (key - query): (bidirectional bucket, causal bucket)
    0: (0, 0),
    -1: (1, 1),
    1: (17, 0),
    -7: (7, 7),
    7: (23, 0),
    -8: (8, 8),
    -15: (9, 15),  # 8 + floor(log(15/8)/log(16)*8) = 8 + floor(1.81) = 9
    -16: (10, 16),  # 8 + 2 = 10
    -32: (12, 21),  # 8 + 4; causal 16 + floor(log(2)/log(8)*16) = 16 + 5
    -64: (14, 26),  # 8 + 6; causal 16 + floor(10.67) = 26
    20: (26, 0),  # 16 (key after query) + 8 + floor(log(20/8)/log(16)*8) = 16 + 8 + 2
    -127: (15, 31),
    -128: (15, 31),
    -1000: (15, 31),
    1000: (31, 0),
}


def test_t5_relative_buckets_match_hand_table():
    rel = torch.tensor(list(T5_TABLE))
    bi = relative_position_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    causal = relative_position_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)
    assert bi.tolist() == [b for b, _ in T5_TABLE.values()]
    assert causal.tolist() == [c for _, c in T5_TABLE.values()]


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_relative_buckets_match_transformers(bidirectional):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    rel = torch.arange(-300, 300)[None, :]
    for buckets, max_distance in ((32, 128), (16, 40)):
        ref = t5.T5Attention._relative_position_bucket(
            rel, bidirectional=bidirectional, num_buckets=buckets, max_distance=max_distance
        )
        ours = relative_position_bucket(rel, bidirectional, buckets, max_distance)
        assert torch.equal(ours, ref)


def test_relative_position_bias_lookup_and_cache_offset():
    module = RelativePositionBias(n_heads=2, num_buckets=8, max_distance=16, bidirectional=False)
    with torch.no_grad():
        module.weight.copy_(torch.arange(16.0).view(8, 2))
    full = module(5)
    assert full.shape == (1, 2, 5, 5)
    # causal buckets: distance d (key before query) -> bucket d for small d; head 1 = 2b + 1
    assert full[0, 1, 3].tolist() == [7.0, 5.0, 3.0, 1.0, 1.0]
    torch.testing.assert_close(module(2, 5), full[:, :, 3:])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rotary_angles_survive_a_half_precision_model_cast(dtype):
    positions = torch.arange(2048)
    cos, sin = Rotary(64)(positions, dtype)
    cos_half, sin_half = Rotary(64).to(dtype)(positions, dtype)  # model.to(dtype) casts buffers
    assert cos_half.dtype == dtype
    torch.testing.assert_close(cos_half, cos, atol=0, rtol=0)
    torch.testing.assert_close(sin_half, sin, atol=0, rtol=0)


def test_fixed_tables_are_real_cpu_tensors_inside_a_meta_build() -> None:
    """Loaders build on the meta device; config-derived tables must still hold numbers."""
    from explorer.config import ModelConfig
    from explorer.nn import build_model

    for positional in ("rope", "sinusoidal"):
        cfg = ModelConfig(d_model=16, n_heads=2, d_mlp=32, d_vocab=11, n_ctx=8, n_layers=1,
                          positional=positional)
        with torch.device("meta"):
            model = build_model(cfg)
        buffers = dict(model.named_buffers())
        assert buffers and all(b.device.type == "cpu" for b in buffers.values())
        assert all(p.is_meta for p in model.parameters())
