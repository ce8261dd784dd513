"""explorer.nn.model: every model kind end to end on tiny seeded configs.

Forward and backward for decoder, encoder (token types, post-norm) and encoder-decoder
(relative bias); captured names and shapes as ARCHITECTURE.md lists them; per-call capture
under two concurrent threads; the fused and explicit attention paths agree; KV-cache decoding
equals full recomputation; `layer_pattern` and `unembed_residual` agree with the cache.
"""

import threading

import pytest
import torch

from explorer.config import ModelConfig
from explorer.nn import EncoderDecoderTransformer, KVCache, Transformer, build_model

torch.set_num_threads(1)

TINY = dict(d_model=16, n_heads=4, d_mlp=24, d_vocab=37, n_ctx=16, n_layers=2)

DECODERS = {
    "llama": dict(positional="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2),
    "gpt2": dict(positional="learned", qkv_bias=True, out_bias=True, mlp_bias=True,
                 tied_embeddings=True),
    "alibi": dict(positional="alibi", mlp="relu"),
    "window": dict(positional="rope", window=2, n_kv_heads=1),
    "sinusoidal": dict(positional="sinusoidal", norm_position="post"),
    "relative": dict(positional="relative", attn_scale=False, relative_buckets=8,
                     relative_max_distance=12),
    "moe": dict(positional="rope", mlp="moe", n_experts=3, experts_top_k=2),
}
ENCODER = dict(kind="encoder", positional="learned", norm_position="post", n_token_types=2,
               embed_norm=True, mlm_head=True, qkv_bias=True, out_bias=True, mlp_bias=True,
               unembed_bias=True, tied_embeddings=True)
ENC_DEC = dict(kind="encoder-decoder", positional="relative", norm="rmsnorm", attn_scale=False,
               mlp="geglu", tied_embeddings=True, unembed_scale=16**-0.5, n_decoder_layers=3,
               relative_buckets=8, relative_max_distance=12)


def make(seed=0, dtype=torch.float64, **changes):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**{**TINY, **changes})).to(dtype)
    with torch.no_grad():  # relative biases start at zero; make them matter
        for name, p in model.named_parameters():
            if name.endswith("rel_bias.weight"):
                p.normal_()
    return model.eval()


def ids(b=2, n=7, seed=1, vocab=37):
    return torch.randint(0, vocab, (b, n), generator=torch.Generator().manual_seed(seed))


def assert_all_grads(model, allow_missing=()):
    for name, p in model.named_parameters():
        if any(s in name for s in allow_missing):
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


# ----------------------------------------------------------------- forward and backward


@pytest.mark.parametrize("arch", list(DECODERS))
def test_decoder_forward_backward(arch):
    model = make(**DECODERS[arch]).train()
    assert isinstance(model, Transformer) and model.cfg.causal
    logits = model(ids())
    assert logits.shape == (2, 7, 37) and torch.isfinite(logits).all()
    logits.logsumexp(-1).mean().backward()
    assert_all_grads(model, allow_missing=("experts",))


def test_decoder_is_causal():
    model = make(**DECODERS["llama"])
    x = ids()
    changed = x.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 37
    torch.testing.assert_close(model(changed)[:, :5], model(x)[:, :5])
    assert not torch.allclose(model(changed)[:, 5:], model(x)[:, 5:])


def test_encoder_with_token_types_and_post_norm_forward_backward():
    model = make(**ENCODER).train()
    assert model.final_norm is None and not model.cfg.causal
    assert model.head.unembed.weight is model.embed.tokens.weight
    x = ids()
    types = torch.tensor([[0, 0, 0, 1, 1, 1, 1]] * 2)
    logits = model(x, token_type_ids=types)
    assert logits.shape == (2, 7, 37)
    assert not torch.allclose(logits, model(x))  # token types matter
    # bidirectional: changing the last token changes the first position's output
    changed = x.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 37
    assert not torch.allclose(model(changed, token_type_ids=types)[:, 0], logits[:, 0])
    logits.logsumexp(-1).mean().backward()
    assert_all_grads(model)


def test_encoder_padding_does_not_change_real_tokens():
    model = make(**ENCODER)
    x = ids(b=1, n=5)
    padded = torch.cat([x, torch.tensor([[3, 3]])], dim=1)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    torch.testing.assert_close(model(padded, attention_mask=mask)[:, :5], model(x))


def test_encoder_without_unembedding_returns_hidden_states():
    model = make(**{**ENCODER, "has_unembed": False, "tied_embeddings": False})
    assert model(ids()).shape == (2, 7, 16)
    with pytest.raises(ValueError, match="unembedding"):
        model.unembed_residual(torch.zeros(16, dtype=torch.float64))


def test_encoder_decoder_with_relative_bias_forward_backward():
    model = make(**ENC_DEC).train()
    assert isinstance(model, EncoderDecoderTransformer)
    assert len(model.encoder.blocks) == 2 and len(model.decoder.blocks) == 3
    assert model.encoder.rel_bias.bidirectional and not model.decoder.rel_bias.bidirectional
    enc, dec = ids(n=6), ids(n=4, seed=2)
    logits = model(enc, dec)
    assert logits.shape == (2, 4, 37)
    logits.logsumexp(-1).mean().backward()
    assert_all_grads(model)


def test_encoder_decoder_masks_padded_encoder_tokens():
    model = make(**ENC_DEC)
    enc, dec = ids(b=1, n=4), ids(b=1, n=3, seed=2)
    padded = torch.cat([enc, torch.tensor([[5, 5]])], dim=1)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    torch.testing.assert_close(model(padded, dec, attention_mask=mask), model(enc, dec))


def test_context_length_is_enforced():
    model = make(**DECODERS["gpt2"])
    with pytest.raises(ValueError, match="context length"):
        model(ids(n=17))


def test_build_model_rejects_enc_dec_config_for_transformer():
    with pytest.raises(ValueError, match="EncoderDecoderTransformer"):
        Transformer(ModelConfig(**TINY, kind="encoder-decoder"))


# ----------------------------------------------------------------- capture


def test_captured_names_and_shapes_match_architecture():
    model = make(**DECODERS["llama"])
    logits, cache = model.run_with_cache(ids(b=1, n=7))
    assert logits.shape == (1, 7, 37)
    d = {"embed": (1, 7, 16), "final_norm": (1, 7, 16)}
    for i in range(2):
        p = f"blocks.{i}."
        d |= {p + "resid_pre": (1, 7, 16), p + "resid_mid": (1, 7, 16),
              p + "resid_post": (1, 7, 16), p + "attn.out": (1, 7, 16),
              p + "mlp.out": (1, 7, 16), p + "attn.pattern": (1, 4, 7, 7),
              p + "attn.q": (1, 4, 7, 4), p + "attn.k": (1, 2, 7, 4),
              p + "attn.v": (1, 2, 7, 4), p + "attn.z": (1, 4, 7, 4),
              p + "mlp.post": (1, 7, 24)}
    assert {k: tuple(v.shape) for k, v in cache.items()} == d
    patterns = cache.stack("attn.pattern")
    assert patterns.shape == (2, 1, 4, 7, 7)
    torch.testing.assert_close(patterns.sum(-1), torch.ones(2, 1, 4, 7, dtype=torch.float64))
    assert (patterns[..., torch.triu(torch.ones(7, 7, dtype=torch.bool), 1)] == 0).all()
    # the residual stream adds up: resid_post = resid_mid + mlp.out = resid_pre + attn + mlp
    torch.testing.assert_close(cache["blocks.0.resid_mid"],
                               cache["blocks.0.resid_pre"] + cache["blocks.0.attn.out"])
    torch.testing.assert_close(cache["blocks.0.resid_post"],
                               cache["blocks.0.resid_mid"] + cache["blocks.0.mlp.out"])
    torch.testing.assert_close(cache["blocks.1.resid_pre"], cache["blocks.0.resid_post"])
    assert not any(t.requires_grad for t in cache.values())


def test_absolute_positions_and_moe_routing_are_captured():
    _, cache = make(**DECODERS["gpt2"]).run_with_cache(ids(b=1, n=5))
    assert cache["pos_embed"].shape == (5, 16)
    torch.testing.assert_close(cache["blocks.0.resid_pre"], cache["embed"] + cache["pos_embed"])
    _, cache = make(**DECODERS["moe"]).run_with_cache(ids(b=1, n=5))
    assert cache["blocks.1.mlp.experts"].shape == (1, 5, 2)
    assert cache["blocks.1.mlp.router_probs"].shape == (1, 5, 3)
    torch.testing.assert_close(cache["blocks.1.mlp.expert_weights"].sum(-1),
                               torch.ones(1, 5, dtype=torch.float64))


def test_encoder_decoder_capture_names():
    model = make(**ENC_DEC)
    _, cache = model.run_with_cache(ids(b=1, n=6), ids(b=1, n=4, seed=2))
    assert cache["encoder.blocks.1.attn.pattern"].shape == (1, 4, 6, 6)
    assert cache["decoder.blocks.2.attn.pattern"].shape == (1, 4, 4, 4)
    assert cache["decoder.blocks.0.cross_attn.pattern"].shape == (1, 4, 4, 6)
    assert cache["decoder.blocks.0.cross_attn.out"].shape == (1, 4, 16)
    for name in ("encoder.embed", "decoder.embed", "encoder.final_norm", "decoder.final_norm"):
        assert name in cache
    assert cache.stack("resid_post", prefix="decoder.").shape == (3, 1, 4, 16)
    assert cache.stack("resid_post", prefix="encoder.").shape == (2, 1, 6, 16)


def test_names_filter_list_glob_and_predicate():
    model = make(**DECODERS["llama"])
    x = ids(b=1, n=5)
    full_logits, full = model.run_with_cache(x)
    _, only = model.run_with_cache(x, names=["blocks.1.resid_post", "embed"])
    assert set(only) == {"blocks.1.resid_post", "embed"}
    torch.testing.assert_close(only["blocks.1.resid_post"], full["blocks.1.resid_post"])
    logits, globbed = model.run_with_cache(x, names=["blocks.*.attn.pattern"])
    assert set(globbed) == {"blocks.0.attn.pattern", "blocks.1.attn.pattern"}
    torch.testing.assert_close(logits, full_logits)
    _, everything_in_block_0 = model.run_with_cache(x, names=["blocks.0.*"])
    assert set(everything_in_block_0) == {k for k in full if k.startswith("blocks.0.")}
    _, predicate = model.run_with_cache(x, names=lambda n: n.endswith("resid_pre"))
    assert set(predicate) == {"blocks.0.resid_pre", "blocks.1.resid_pre"}
    _, none = model.run_with_cache(x, names=[])
    assert none == {}


def test_two_threads_on_one_model_get_their_own_cache():
    model = make(**DECODERS["llama"])
    inputs = [ids(b=1, n=6, seed=10), ids(b=1, n=9, seed=11)]
    expected = [model.run_with_cache(x) for x in inputs]
    # both threads wait for each other inside the first block, so their forwards overlap
    barrier = threading.Barrier(2, timeout=10)

    def meet(*_):
        barrier.wait()  # returns nothing, so the block's inputs are left as they are

    handle = model.blocks[0].register_forward_pre_hook(meet)
    results: list = [None, None]
    errors: list = []

    def run(i):
        try:
            results[i] = model.run_with_cache(inputs[i])
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        handle.remove()
    assert not errors
    for (logits, cache), (ref_logits, ref_cache) in zip(results, expected, strict=True):
        torch.testing.assert_close(logits, ref_logits)
        assert set(cache) == set(ref_cache)
        for name in ref_cache:
            torch.testing.assert_close(cache[name], ref_cache[name])
    assert results[0][1]["blocks.1.attn.pattern"].shape[-1] == 6
    assert results[1][1]["blocks.1.attn.pattern"].shape[-1] == 9


# ----------------------------------------------------------------- fused vs explicit


@pytest.mark.parametrize("arch", list(DECODERS))
def test_fused_path_equals_explicit_path(arch):
    model = make(**DECODERS[arch])
    x = ids()
    fused = model(x)  # nobody asks for a pattern: torch's fused SDPA
    explicit, cache = model.run_with_cache(x, names=["blocks.0.attn.pattern",
                                                     "blocks.1.attn.pattern"])
    assert len(cache) == 2
    torch.testing.assert_close(explicit, fused, atol=1e-10, rtol=0)


def test_fused_path_equals_explicit_path_encoder_with_padding():
    model = make(**ENCODER)
    x, mask = ids(), torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    fused = model(x, attention_mask=mask)
    explicit, cache = model.run_with_cache(x, attention_mask=mask)
    torch.testing.assert_close(explicit, fused, atol=1e-10, rtol=0)
    assert (cache["blocks.0.attn.pattern"][1, :, :, 4:] == 0).all()


def test_fused_path_equals_explicit_path_encoder_decoder():
    model = make(**ENC_DEC)
    enc, dec = ids(n=6), ids(n=4, seed=2)
    explicit, _ = model.run_with_cache(enc, dec)
    torch.testing.assert_close(explicit, model(enc, dec), atol=1e-10, rtol=0)


def test_left_padded_decoder_batch_explicit_equals_fused_and_unpadded():
    model = make(**DECODERS["llama"])
    x, mask = ids(b=2, n=6), torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    fused = model(x, attention_mask=mask)
    explicit, cache = model.run_with_cache(x, attention_mask=mask)
    assert not explicit.isnan().any()
    torch.testing.assert_close(explicit, fused, atol=1e-10, rtol=0)
    # RoPE is relative, so the real tokens of the padded row match running them alone
    torch.testing.assert_close(explicit[0, 2:], model(x[:1, 2:])[0], atol=1e-10, rtol=0)
    assert (cache["blocks.1.attn.pattern"][0, :, 2:, :2] == 0).all()


def test_window_pattern_is_zero_outside_the_window():
    _, cache = make(**DECODERS["window"]).run_with_cache(ids(b=1, n=8))
    pattern = cache["blocks.0.attn.pattern"][0, 0]
    for i in range(8):
        allowed = {j for j in range(8) if pattern[i, j] > 0}
        assert allowed == {j for j in range(8) if 0 <= i - j <= 2}


# ----------------------------------------------------------------- KV cache


@pytest.mark.parametrize("arch", ["llama", "gpt2", "alibi", "window", "relative", "sinusoidal"])
def test_kv_cache_incremental_logits_equal_full_recompute(arch):
    model = make(**DECODERS[arch])
    x = ids(b=2, n=10)
    full = model(x)
    cache = KVCache(model.cfg, max_len=16, batch=2, dtype=torch.float64)
    prompt = 4
    step_logits = [model(x[:, :prompt], kv_cache=cache)]
    assert cache.length == prompt
    for pos in range(prompt, 10):
        step_logits.append(model(x[:, pos : pos + 1], kv_cache=cache))
        assert cache.length == pos + 1
        torch.testing.assert_close(step_logits[-1][:, 0], full[:, pos], atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.cat(step_logits, dim=1), full, atol=1e-10, rtol=0)


def test_encoder_decoder_kv_cache_equals_full_decode_and_keeps_cross_keys():
    """Decoder self-attention cached per position, cross-attention keys/values computed at
    the first step and reused: the same logits as decoding the whole target at once."""
    model = make(**ENC_DEC)
    source, target = ids(b=2, n=7), ids(b=2, n=6, seed=1)
    memory = model.encode(source)
    full = model.decode(target, memory)
    cache = KVCache(model.cfg.replace(n_layers=model.cfg.n_decoder_layers), max_len=6,
                    batch=2, dtype=torch.float64)
    first = model.decode(target[:, :2], memory, kv_cache=cache)
    torch.testing.assert_close(first, full[:, :2], atol=1e-10, rtol=0)
    kept = [kv for kv in cache.cross]
    assert all(kv is not None and kv[0].shape == (2, 4, 7, 4) for kv in kept)
    for pos in range(2, 6):
        step = model.decode(target[:, pos:pos + 1], memory, kv_cache=cache)
        torch.testing.assert_close(step[:, 0], full[:, pos], atol=1e-10, rtol=0)
    assert all(a is b for a, b in zip(cache.cross, kept, strict=True))  # reused, not redone
    assert cache.length == 6


def test_kv_cache_chunks_last_only_and_truncate():
    model = make(**DECODERS["llama"])
    x = ids(b=1, n=9)
    full = model(x)
    cache = KVCache(model.cfg, max_len=9, dtype=torch.float64)
    model(x[:, :3], kv_cache=cache)
    chunk = model(x[:, 3:7], kv_cache=cache)  # several new positions at once
    torch.testing.assert_close(chunk, full[:, 3:7], atol=1e-10, rtol=0)
    last = model(x[:, 7:9], kv_cache=cache, last_only=True)
    assert last.shape == (1, 1, 37)
    torch.testing.assert_close(last[:, 0], full[:, 8], atol=1e-10, rtol=0)
    cache.truncate(5)
    redo = model(x[:, 5:9], kv_cache=cache)
    torch.testing.assert_close(redo, full[:, 5:9], atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="KV cache full"):
        model(x[:, :1], kv_cache=cache)


def test_kv_cache_with_capture_records_patterns_over_all_keys():
    model = make(**DECODERS["llama"])
    x = ids(b=1, n=6)
    _, full_cache = model.run_with_cache(x)
    cache = KVCache(model.cfg, max_len=6, dtype=torch.float64)
    model(x[:, :5], kv_cache=cache)
    _, step = model.run_with_cache(x[:, 5:], kv_cache=cache)
    assert step["blocks.1.attn.pattern"].shape == (1, 4, 1, 6)
    torch.testing.assert_close(step["blocks.1.attn.pattern"][:, :, 0],
                               full_cache["blocks.1.attn.pattern"][:, :, 5])


# ----------------------------------------------------------------- layer pattern, logit lens


@pytest.mark.parametrize("arch", ["llama", "alibi", "window", "relative", "sinusoidal"])
def test_layer_pattern_equals_captured_pattern(arch):
    model = make(**DECODERS[arch])
    _, cache = model.run_with_cache(ids(n=8))
    for layer in range(2):
        recomputed = model.layer_pattern(layer, cache[f"blocks.{layer}.resid_pre"])
        torch.testing.assert_close(recomputed, cache[f"blocks.{layer}.attn.pattern"])


def test_layer_pattern_encoder_with_padding():
    model = make(**ENCODER)
    x, mask = ids(), torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    _, cache = model.run_with_cache(x, attention_mask=mask)
    recomputed = model.layer_pattern(1, cache["blocks.1.resid_pre"], attention_mask=mask)
    torch.testing.assert_close(recomputed, cache["blocks.1.attn.pattern"])


@pytest.mark.parametrize("arch", ["llama", "gpt2", "sinusoidal"])
def test_unembed_residual_of_last_resid_is_logits(arch):
    model = make(**DECODERS[arch])
    logits, cache = model.run_with_cache(ids())
    torch.testing.assert_close(model.unembed_residual(cache["blocks.1.resid_post"]), logits)


def test_unembed_residual_encoder_and_encoder_decoder():
    model = make(**ENCODER)
    logits, cache = model.run_with_cache(ids())
    torch.testing.assert_close(model.unembed_residual(cache["blocks.1.resid_post"]), logits)
    model = make(**ENC_DEC)
    logits, cache = model.run_with_cache(ids(n=5), ids(n=3, seed=2))
    resid = cache["decoder.blocks.2.resid_post"]
    torch.testing.assert_close(model.unembed_residual(resid), logits)


def test_float32_model_runs_and_matches_float64():
    ref = make(**DECODERS["llama"])
    model = make(dtype=torch.float32, **DECODERS["llama"])
    x = ids()
    torch.testing.assert_close(model(x).double(), ref(x), atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("arch", ["llama", "alibi", "relative"])
def test_cuda_model_matches_cpu_and_kv_cache_works_there(arch):
    ref = make(**DECODERS[arch])
    model = make(dtype=torch.float32, **DECODERS[arch]).to("cuda")
    x = ids()
    logits = model(x.cuda())
    torch.testing.assert_close(logits.double().cpu(), ref(x), atol=1e-3, rtol=1e-3)
    cache = KVCache(model.cfg, max_len=8, batch=2, device="cuda", dtype=torch.float32)
    steps = [model(x[:, :3].cuda(), kv_cache=cache)]
    steps += [model(x[:, i : i + 1].cuda(), kv_cache=cache) for i in range(3, 7)]
    torch.testing.assert_close(torch.cat(steps, 1), logits, atol=1e-4, rtol=1e-4)
    bf16 = model.to(torch.bfloat16)
    _, cache = bf16.run_with_cache(x.cuda())
    assert cache["blocks.1.attn.pattern"].dtype == torch.bfloat16
    assert torch.isfinite(bf16(x.cuda()).float()).all()
