"""explorer.runs' layer views on tiny seeded models: windows of the lens equal the whole
lens, rows and strides, float16 sub-layer outputs on long prompts, encoders without a head,
post-norm refusals, geometry shapes, and what a run holds."""

from __future__ import annotations

import pytest
import torch

from explorer.config import ModelConfig
from explorer.nn import build_model
from explorer.runs import (
    Row,
    Tokens,
    contributions,
    contributions_unavailable,
    cosine_matrix,
    lens,
    lens_stream,
    pca_layers,
    prompt_run,
    run_prompt,
    stream_norms,
)

torch.set_num_threads(1)
TINY = dict(d_model=16, n_heads=4, d_mlp=24, d_vocab=37, n_ctx=64, n_layers=4,
            positional="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2)


def make(**changes):
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**TINY, **changes})).eval()


def tokens(n=12, seed=1):
    ids = torch.randint(0, 37, (n,), generator=torch.Generator().manual_seed(seed))
    return Tokens(ids, [str(int(i)) for i in ids], torch.zeros(n, dtype=torch.bool))


def test_a_window_of_the_lens_is_a_slice_of_the_whole_lens() -> None:
    model = make()
    run = run_prompt(model, "decoder", 4, tokens())
    rows = run.streams["main"].rows(sublayers=True)
    whole = lens(run, rows, range(12), 3)
    part = lens(run, rows[2:5], [3, 4, 5, 9], 3)
    torch.testing.assert_close(part.top_probs, whole.top_probs[2:5][:, [3, 4, 5, 9]])
    torch.testing.assert_close(part.kl, whole.kl[2:5][:, [3, 4, 5, 9]])
    assert lens(run, rows, range(12), 3) is whole  # memoised in the run


def test_rows_and_stride_keep_the_embeddings_and_the_last_block() -> None:
    stream = run_prompt(make(), "decoder", 4, tokens()).streams["main"]
    assert [r.label for r in stream.rows()] == ["embeddings", "L0", "L1", "L2", "L3"]
    assert [r.label for r in stream.rows(stride=3)] == ["embeddings", "L2", "L3"]
    assert [r.label for r in stream.rows(sublayers=True, stride=2)] == [
        "embeddings", "L1 attn", "L1", "L3 attn", "L3"]
    with pytest.raises(KeyError):
        stream.residual(Row(0, "cross"))


def test_long_prompts_keep_sub_layer_outputs_in_float16(monkeypatch) -> None:
    model = make()
    exact = run_prompt(model, "decoder", 4, tokens(40))
    monkeypatch.setattr(prompt_run, "EXACT_SUBLAYER_BYTES", 0)
    halved = run_prompt(model, "decoder", 4, tokens(40))
    assert exact.streams["main"].sublayers["attn"].dtype == torch.float32
    assert halved.streams["main"].sublayers["attn"].dtype == torch.float16
    _, cache = model.run_with_cache(tokens(40).ids[None])
    for layer in range(4):  # resid_mid read back from the float16 outputs
        mid = halved.streams["main"].residual(Row(layer, "attn"))
        torch.testing.assert_close(mid, cache[f"blocks.{layer}.resid_mid"][0], atol=2e-3,
                                   rtol=2e-3)
    # boundaries stay float32, so the parts still add up to the final stream exactly
    labels, parts = halved.streams["main"].components([0, 39])
    torch.testing.assert_close(parts.sum(0), halved.streams["main"].boundaries[-1][[0, 39]],
                               atol=1e-5, rtol=0)
    assert labels[:3] == ["embeddings", "L0 attn", "L0 mlp"]
    assert halved.nbytes() < exact.nbytes()


def test_an_encoder_without_a_head_has_no_lens_but_has_geometry() -> None:
    model = make(kind="encoder", positional="learned", norm="layernorm",
                 norm_position="post", mlp="gelu", n_kv_heads=None, has_unembed=False)
    run = run_prompt(model, "encoder", 4, tokens(9))
    assert lens_stream(run) is None
    assert "no unembedding" in contributions_unavailable(run)
    with pytest.raises(ValueError, match="no unembedding"):
        lens(run, [Row(-1)], [0], 3)
    norms = stream_norms(run, "main")
    assert norms.resid.shape == (5, 9) and norms.written["attn"].shape == (4, 9)
    assert norms.written["mlp"].shape == (4, 9) and norms.cosine.shape == (4, 9)
    assert cosine_matrix(run, "main", Row(2)).shape == (9, 9)
    pca = pca_layers(run, "main", skip_first=True)
    assert pca.coords.shape == (5, 8, 2)


def test_post_norm_models_refuse_contributions_and_pre_norm_parts_add_up() -> None:
    post = make(kind="encoder", positional="learned", norm="layernorm", norm_position="post",
                mlp="gelu", n_kv_heads=None)
    run = run_prompt(post, "encoder", 4, tokens(6))
    assert "post-norm" in contributions_unavailable(run)
    pre = make(positional="learned", norm="layernorm", mlp="gelu", n_kv_heads=None)
    run = run_prompt(pre, "decoder", 4, tokens(6))
    with torch.no_grad():
        logits = pre(tokens(6).ids[None])[0]
    for position in range(6):
        parts = contributions(run, position, 5)
        assert float(parts.values.sum()) + parts.constant == pytest.approx(
            float(logits[position, 5]), abs=1e-4)


def test_the_run_keeps_only_the_stream_and_a_bounded_memo() -> None:
    model = make()
    run = run_prompt(model, "decoder", 4, tokens(20), derived_bytes=4096)
    stream = run.streams["main"]
    assert stream.boundaries.shape == (5, 20, 16)
    held = stream.nbytes()
    assert held == (5 * 20 * 16 + 4 * 20 * 16) * 4
    for layer in range(4):
        run.layer("self", layer)  # 4 heads x 20 x 20 x 4 bytes = 6.4 kB each
    assert len(run.memo) == 1 and run.nbytes() == held + 4 * 20 * 20 * 4
    with pytest.raises(ValueError, match="no tokens"):
        run_prompt(model, "decoder", 4, tokens(0))
