"""Writable activations: an edit replaces one named activation for one call, on every
forward path (fused, explicit pattern, layer-pattern recompute, KV-cache generation), never
stays on the shared model, and refuses what it cannot apply."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

import explorer
from explorer.config import ModelConfig
from explorer.nn import build_model
from explorer.nn.capture import ACTIVATIONS, Capture

torch.set_num_threads(1)
TINY = dict(d_model=16, n_heads=4, d_mlp=24, d_vocab=37, n_ctx=64, n_layers=3)
DECODER = dict(positional="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2)


def make(**changes):
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**TINY, **DECODER, **changes})).eval()


def ids(n=9, seed=1):
    return torch.randint(0, 37, (1, n), generator=torch.Generator().manual_seed(seed))


class DigitTokenizer:
    """Token i reads as its number (enough for generate's detokenizer)."""

    eos_token_id = None

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return " ".join(str(int(i)) for i in ids)

    def convert_tokens_to_ids(self, token: str) -> None:
        return None


def zero_head(head):
    def edit(z):
        z = z.clone()
        z[:, head] = 0
        return z
    return edit


def test_zeroing_a_head_equals_zeroing_its_slice_of_the_output_projection() -> None:
    model = make()
    x = ids()
    with torch.no_grad():
        edited = model(x, edits={"blocks.1.attn.z": zero_head(2)})
        o = model.blocks[1].attn.o
        original = o.weight.detach().clone()
        o.weight[:, 2 * 4:3 * 4] = 0  # head 2's columns of W_O (d_head 4)
        expected = model(x)
        o.weight.copy_(original)
        plain = model(x)
    torch.testing.assert_close(edited, expected, atol=1e-5, rtol=0)
    assert (edited - plain).abs().max() > 1e-3  # the edit changed something
    torch.testing.assert_close(model(x).detach(), plain)  # and nothing stayed on the model


def test_edits_are_per_call_across_threads() -> None:
    model = make()
    x = ids(12)
    with torch.no_grad():
        wanted = {h: model(x, edits={"blocks.0.attn.z": zero_head(h)}) for h in range(4)}
    results: dict[int, list[torch.Tensor]] = {h: [] for h in range(4)}

    def work(head: int) -> None:
        with torch.no_grad():
            for _ in range(20):
                results[head].append(model(x, edits={"blocks.0.attn.z": zero_head(head)}))

    threads = [threading.Thread(target=work, args=(h,)) for h in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for head, outs in results.items():
        for out in outs:
            torch.testing.assert_close(out, wanted[head])


def test_every_kind_of_name_is_editable_and_the_cache_holds_the_edited_value() -> None:
    model = make()
    x = ids()
    names = ["embed", "blocks.0.resid_pre", "blocks.0.attn.q", "blocks.0.attn.k",
             "blocks.0.attn.v", "blocks.0.attn.pattern", "blocks.0.attn.z",
             "blocks.0.attn.out", "blocks.0.resid_mid", "blocks.1.mlp.post", "blocks.1.mlp.out",
             "blocks.2.resid_post", "final_norm"]
    for name in names:
        # scale and shift: a scale alone would vanish in the final RMSNorm
        logits, cache = model.run_with_cache(x, names=[name],
                                             edits={name: lambda t: t * 0.5 + 0.25})
        plain, plain_cache = model.run_with_cache(x, names=[name])
        torch.testing.assert_close(cache[name], plain_cache[name] * 0.5 + 0.25)
        assert (logits - plain).abs().max() > 1e-4, name
    assert "blocks.{i}.attn.z" in ACTIVATIONS


def test_a_pattern_edit_takes_the_explicit_path_and_mean_ablation_by_hand() -> None:
    model = make()
    x = ids()
    def uniform(p):
        return torch.tril(torch.ones_like(p)) / torch.arange(1, p.shape[-1] + 1)[:, None]

    _, cache = model.run_with_cache(x, names=["blocks.1.attn.pattern", "blocks.1.attn.v",
                                              "blocks.1.attn.z"],
                                    edits={"blocks.1.attn.pattern": uniform})
    v = cache["blocks.1.attn.v"].repeat_interleave(2, dim=1)  # GQA: 2 query heads per kv head
    torch.testing.assert_close(cache["blocks.1.attn.z"], uniform(cache["blocks.1.attn.pattern"])
                               @ v, atol=1e-6, rtol=0)
    # mean ablation of a head over the prompt's positions, checked by hand
    _, plain = model.run_with_cache(x, names=["blocks.2.attn.z", "blocks.2.resid_mid",
                                              "blocks.2.resid_pre"])
    mean = plain["blocks.2.attn.z"][:, 1].mean(1, keepdim=True)  # [1, 1, d]

    def mean_head(z):
        z = z.clone()
        z[:, 1] = mean
        return z

    _, edited = model.run_with_cache(x, names=["blocks.2.resid_mid"],
                                     edits={"blocks.2.attn.z": mean_head})
    z = plain["blocks.2.attn.z"].clone()
    z[:, 1] = mean
    attn = model.blocks[2].attn
    expected = plain["blocks.2.resid_pre"] + attn.o(z.transpose(1, 2).reshape(1, 9, 16))
    torch.testing.assert_close(edited["blocks.2.resid_mid"], expected, atol=1e-5, rtol=0)


def test_bad_edits_are_refused_clearly() -> None:
    model = make()
    with pytest.raises(ValueError, match=r"no activation named blocks\.7\.attn\.z"):
        model(ids(), edits={"blocks.7.attn.z": lambda z: z})
    with pytest.raises(ValueError, match="must return a tensor of shape"):
        model(ids(), edits={"blocks.0.attn.z": lambda z: z[:, :1]})
    with pytest.raises(ValueError, match="edits given twice"):
        model(ids(), capture=Capture((), {"embed": lambda t: t}), edits={"embed": lambda t: t})


def test_layer_pattern_applies_its_own_edits_and_refuses_upstream_ones() -> None:
    model = make()
    x = ids()
    _, cache = model.run_with_cache(x, names=["blocks.1.resid_pre", "blocks.1.attn.pattern"],
                                    edits={"blocks.1.attn.q": lambda q: q * 2})
    recomputed = model.layer_pattern(1, cache["blocks.1.resid_pre"],
                                     edits={"blocks.1.attn.q": lambda q: q * 2})
    torch.testing.assert_close(recomputed, cache["blocks.1.attn.pattern"], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="act before resid_pre"):
        model.layer_pattern(1, cache["blocks.1.resid_pre"], edits={"embed": lambda t: t})


def test_generation_with_edits_matches_the_edited_full_forward() -> None:
    model = make()
    lm = SimpleNamespace(model=model, tokenizer=DigitTokenizer())
    prompt = ids(6)
    edits = {"blocks.1.attn.z": zero_head(0), "blocks.2.mlp.out": lambda t: t * 0,
             "final_norm": lambda t: t.flip(-1)}
    steps = list(explorer.generate(lm, prompt, max_new_tokens=6, stop_ids=[], edits=edits))
    sequence = prompt
    with torch.no_grad():
        for step in steps:  # greedy, one full (cache-free) forward per token
            nxt = model(sequence, edits=edits)[0, -1].argmax()
            assert int(nxt) == step.token_id
            sequence = torch.cat([sequence, nxt.view(1, 1)], 1)
    plain = [s.token_id for s in explorer.generate(lm, prompt, max_new_tokens=6, stop_ids=[])]
    assert plain != [s.token_id for s in steps]


def test_the_fast_decoder_refuses_edits() -> None:
    from explorer.generation.decode import _forward
    from explorer.generation.fast_step import FastDecoder
    from explorer.nn.kv_cache import KVCache

    model = make()
    cache = KVCache(model.cfg, 16)
    fast = FastDecoder.build(model, cache)
    assert fast is not None
    with pytest.raises(ValueError, match="fast decoder cannot apply edits"):
        _forward(model, ids(1), cache, False, fast, {"blocks.0.attn.z": lambda z: z})
