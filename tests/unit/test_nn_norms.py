"""explorer.nn.norms against torch.nn.LayerNorm and the RMSNorm formula."""

import torch
from torch import nn

from explorer.config import ModelConfig
from explorer.nn.norms import LayerNorm, RMSNorm, build_norm

torch.set_num_threads(1)


def test_layernorm_equals_torch():
    torch.manual_seed(0)
    ref = nn.LayerNorm(6, eps=1e-5).double()
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours = LayerNorm(6, eps=1e-5).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 6, dtype=torch.float64) * 5 + 2
    out = ours(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref(x), atol=1e-12, rtol=0)


def test_layernorm_without_bias():
    ours = LayerNorm(4, bias=False)
    assert ours.bias is None and [n for n, _ in ours.named_parameters()] == ["weight"]
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    expected = (x - 2.5) / torch.sqrt(torch.tensor(1.25 + 1e-5))
    torch.testing.assert_close(ours(x), expected)


def test_rmsnorm_formula():
    torch.manual_seed(1)
    ours = RMSNorm(5, eps=1e-6).double()
    with torch.no_grad():
        ours.weight.normal_()
    x = torch.randn(3, 5, dtype=torch.float64)
    expected = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * ours.weight
    torch.testing.assert_close(ours(x), expected, atol=1e-12, rtol=0)
    assert [n for n, _ in ours.named_parameters()] == ["weight"]


def test_norms_keep_half_precision_dtype():
    x = torch.randn(2, 8, dtype=torch.bfloat16)
    for norm in (LayerNorm(8).bfloat16(), RMSNorm(8).bfloat16()):
        out = norm(x)
        assert out.dtype == torch.bfloat16
        # statistics in float32: the result is normalised to bf16 precision
        assert abs(out.float().pow(2).mean().item() - 1.0) < 0.05


def test_build_norm_from_config():
    base = dict(d_model=8, n_heads=2, d_mlp=8, d_vocab=4, n_ctx=4, n_layers=1)
    ln = build_norm(ModelConfig(**base, norm_eps=1e-3))
    assert isinstance(ln, LayerNorm) and ln.eps == 1e-3 and ln.bias is not None
    assert build_norm(ModelConfig(**base, norm_bias=False)).bias is None
    rms = build_norm(ModelConfig(**base, norm="rmsnorm", norm_eps=1e-6))
    assert isinstance(rms, RMSNorm) and rms.eps == 1e-6
