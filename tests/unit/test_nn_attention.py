"""explorer.nn.attention against torch's SDPA, torch.nn.MultiheadAttention and the tutorial."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.config import ModelConfig
from explorer.nn.attention import (
    Attention,
    apply_rotary,
    attention_pattern,
    causal_mask,
    combine_masks,
    local_window_mask,
    padding_mask,
    repeat_kv,
    scaled_dot_product_attention,
)

torch.set_num_threads(1)


def qkv(b=2, h=3, n=5, m=5, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = lambda k: torch.randn(b, h, k, d, generator=g, dtype=torch.float64)  # noqa: E731
    return shape(n), shape(m), shape(m)


def test_sdpa_matches_torch_without_mask():
    q, k, v = qkv()
    out, pattern = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    assert out.dtype == torch.float64 and pattern.shape == (2, 3, 5, 5)


def test_sdpa_matches_torch_with_bool_and_float_masks():
    q, k, v = qkv(n=4, m=6)
    g = torch.Generator().manual_seed(1)
    bool_mask = torch.rand(2, 1, 4, 6, generator=g) > 0.4
    bool_mask[..., 0] = True  # every query sees at least one key
    out, _ = scaled_dot_product_attention(q, k, v, mask=bool_mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask))
    float_mask = torch.randn(1, 3, 4, 6, generator=g, dtype=torch.float64)
    out, _ = scaled_dot_product_attention(q, k, v, mask=float_mask, scale=0.3)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=float_mask, scale=0.3)
    torch.testing.assert_close(out, ref)


def test_sdpa_causal_matches_torch_is_causal_and_is_zero_above_diagonal():
    q, k, v = qkv(n=6, m=6)
    out, pattern = scaled_dot_product_attention(q, k, v, mask=causal_mask(6))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    above = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    assert (pattern[..., above] == 0).all()
    assert (pattern[..., ~above] > 0).all()
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 3, 6, dtype=torch.float64))


def test_pattern_rows_sum_to_one_and_scale_default():
    q, k, _ = qkv(n=3, m=7, d=16)
    pattern = attention_pattern(q, k)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 3, 3, dtype=torch.float64))
    by_hand = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1)
    torch.testing.assert_close(pattern, by_hand)
    t5 = attention_pattern(q, k, scale=1.0)
    torch.testing.assert_close(t5, torch.softmax(q @ k.transpose(-1, -2), dim=-1))


def test_pattern_of_half_precision_input_is_softmaxed_in_float32():
    q, k, _ = qkv(n=3, m=3)
    pattern = attention_pattern(q.bfloat16(), k.bfloat16())
    assert pattern.dtype == torch.bfloat16
    torch.testing.assert_close(pattern.double(), attention_pattern(q, k), atol=2e-2, rtol=0)


def test_causal_mask_with_cache_offset():
    # queries are the last 2 of 5 positions: query 3 sees keys 0..3, query 4 sees all
    mask = causal_mask(2, 5)
    assert mask.tolist() == [[True] * 4 + [False], [True] * 5]
    assert causal_mask(3).tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]


@pytest.mark.parametrize("window", [0, 1, 2, 4])
def test_local_window_allows_exactly_keys_within_window(window):
    n = 9
    mask = local_window_mask(n, window)
    for i in range(n):
        assert {j for j in range(n) if mask[i, j]} == {
            j for j in range(n) if abs(i - j) <= window
        }
    causal = local_window_mask(n, window, causal=True)
    for i in range(n):
        assert {j for j in range(n) if causal[i, j]} == {
            j for j in range(n) if 0 <= i - j <= window
        }


def tutorial_local_attention(query, key, value, window_size=16):
    """The tutorial 003 loop, verbatim apart from names (keys window_size // 2 each side)."""
    _, _, seq_len, d_k = query.size()
    output = torch.zeros_like(value)
    for i in range(seq_len):
        start_idx = max(0, i - window_size // 2)
        end_idx = min(seq_len, i + window_size // 2 + 1)
        scores = query[:, :, i : i + 1] @ key[:, :, start_idx:end_idx].transpose(-2, -1)
        weights = F.softmax(scores / math.sqrt(d_k), dim=-1)
        output[:, :, i : i + 1] = weights @ value[:, :, start_idx:end_idx]
    return output


@pytest.mark.parametrize("window_size", [1, 3, 5, 7])
def test_local_window_mask_is_the_tutorials_local_attention(window_size):
    """The tutorial's ``window_size`` w counts the whole window (w // 2 keys each side), our
    ``window`` counts one side: for odd w, tutorial ``local_attention(w)`` is our
    ``local_window_mask(n, window=w // 2)``."""
    n = 8
    allowed = local_window_mask(n, window_size // 2)
    tutorial_keys = [
        set(range(max(0, i - window_size // 2), min(n, i + window_size // 2 + 1)))
        for i in range(n)
    ]
    assert [{j for j in range(n) if allowed[i, j]} for i in range(n)] == tutorial_keys
    q, k, v = qkv(b=1, h=2, n=n, m=n)
    out, _ = scaled_dot_product_attention(q, k, v, mask=allowed)
    torch.testing.assert_close(out, tutorial_local_attention(q, k, v, window_size))


def test_padding_mask_and_combine_masks():
    pad = padding_mask(torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert pad.shape == (2, 1, 1, 3) and pad.dtype == torch.bool
    assert pad[:, 0, 0].tolist() == [[True, True, False], [True, False, False]]
    assert combine_masks(None, None) is None
    both = combine_masks(causal_mask(3), pad)
    assert both.dtype == torch.bool and both.shape == (2, 1, 3, 3)
    assert both[1, 0].tolist() == [[True, False, False]] * 3
    bias = torch.full((1, 1, 3, 3), 0.5)
    mixed = combine_masks(causal_mask(3), bias, bias)
    assert mixed.dtype == torch.float32
    assert mixed[0, 0, 0].tolist() == [1.0, float("-inf"), float("-inf")]
    assert mixed[0, 0, 2].tolist() == [1.0, 1.0, 1.0]


def test_repeat_kv_maps_query_head_to_group():
    x = torch.arange(2).view(1, 2, 1, 1).float()
    assert repeat_kv(x, 3).flatten().tolist() == [0, 0, 0, 1, 1, 1]


def test_apply_rotary_identity_at_angle_zero():
    x = torch.randn(1, 2, 3, 4)
    torch.testing.assert_close(apply_rotary(x, torch.ones(3, 4), torch.zeros(3, 4)), x)


def config(**changes):
    base = dict(d_model=12, n_heads=3, d_mlp=16, d_vocab=11, n_ctx=16, n_layers=1)
    return ModelConfig(**{**base, **changes})


def copy_from_mha(ours: Attention, mha: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        wq, wk, wv = mha.in_proj_weight.chunk(3)
        bq, bk, bv = mha.in_proj_bias.chunk(3)
        for lin, w, b in ((ours.q, wq, bq), (ours.k, wk, bk), (ours.v, wv, bv)):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        ours.o.weight.copy_(mha.out_proj.weight)
        ours.o.bias.copy_(mha.out_proj.bias)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_equals_torch_multihead_attention(causal):
    torch.manual_seed(0)
    cfg = config(qkv_bias=True, out_bias=True)
    mha = nn.MultiheadAttention(12, 3, batch_first=True).double()
    ours = Attention(cfg).double()
    copy_from_mha(ours, mha)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    # torch's attn_mask is True where attention is NOT allowed
    ref, ref_weights = mha(x, x, x, attn_mask=~causal_mask(5) if causal else None,
                           average_attn_weights=False)
    from explorer.nn.capture import Capture

    fused = ours(x, is_causal=causal)
    capture = Capture()
    explicit = ours(x, is_causal=causal, capture=capture, prefix="attn.")
    torch.testing.assert_close(fused, ref)
    torch.testing.assert_close(explicit, ref)
    torch.testing.assert_close(capture.cache["attn.pattern"], ref_weights)


def test_cross_attention_equals_torch_multihead_attention():
    torch.manual_seed(1)
    cfg = config(qkv_bias=True, out_bias=True)
    mha = nn.MultiheadAttention(12, 3, batch_first=True).double()
    ours = Attention(cfg, cross=True).double()
    copy_from_mha(ours, mha)
    x = torch.randn(2, 3, 12, dtype=torch.float64)
    memory = torch.randn(2, 7, 12, dtype=torch.float64)
    ref, _ = mha(x, memory, memory)
    torch.testing.assert_close(ours(x, context=memory), ref)
    assert ours.pattern(x, context=memory).shape == (2, 3, 3, 7)


def test_gqa_with_as_many_kv_heads_as_heads_is_mha():
    torch.manual_seed(2)
    mha_cfg, gqa_cfg = config(), config(n_kv_heads=3)
    mha, gqa = Attention(mha_cfg).double(), Attention(gqa_cfg).double()
    gqa.load_state_dict(mha.state_dict())
    x = torch.randn(1, 6, 12, dtype=torch.float64)
    torch.testing.assert_close(gqa(x, is_causal=True), mha(x, is_causal=True))


def test_gqa_equals_mha_with_repeated_kv_heads():
    torch.manual_seed(3)
    cfg = ModelConfig(d_model=16, n_heads=4, n_kv_heads=2, d_mlp=8, d_vocab=5, n_ctx=8,
                      n_layers=1)
    gqa = Attention(cfg).double()
    mha = Attention(cfg.replace(n_kv_heads=4)).double()
    with torch.no_grad():
        mha.q.weight.copy_(gqa.q.weight)
        mha.o.weight.copy_(gqa.o.weight)
        # query head h reads kv head h // 2: repeat each kv head's rows twice
        for lin in ("k", "v"):
            rows = getattr(gqa, lin).weight.view(2, 4, 16).repeat_interleave(2, dim=0)
            getattr(mha, lin).weight.copy_(rows.reshape(16, 16))
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    from explorer.nn.capture import Capture

    for is_causal in (False, True):
        ref = mha(x, is_causal=is_causal)
        torch.testing.assert_close(gqa(x, is_causal=is_causal), ref)
        capture = Capture()
        torch.testing.assert_close(gqa(x, is_causal=is_causal, capture=capture), ref)
        assert capture.cache["pattern"].shape == (2, 4, 5, 5)
        assert capture.cache["k"].shape == (2, 2, 5, 4)


def test_float64_pattern_is_exact():
    q, k, _ = qkv(n=5, m=5)
    q = q * 3
    by_hand = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
    torch.testing.assert_close(attention_pattern(q, k), by_hand, atol=1e-13, rtol=0)


def test_fully_masked_query_gets_zeros_like_torch():
    q, k, v = qkv(b=1, h=2, n=3, m=4)
    mask = torch.ones(1, 1, 3, 4, dtype=torch.bool)
    mask[..., 0, :] = False  # query 0 may see nothing (a left-padding position)
    out, pattern = scaled_dot_product_attention(q, k, v, mask=mask)
    assert not pattern.isnan().any() and (pattern[..., 0, :] == 0).all()
    row_sums = pattern[..., 1:, :].sum(-1)
    torch.testing.assert_close(row_sums, torch.ones(1, 2, 2, dtype=torch.float64))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
