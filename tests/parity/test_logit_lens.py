"""The logit lens and direct logit attribution vs transformers' eager models.

Lens rows must equal transformers' ``hidden_states`` pushed through its own final norm and
head (decoders, BERT's masked-LM head, T5's decoder with its unembedding scale), the last
row must be the model's real output, and the direct contributions of every part must add
up to the real logit within 1e-3 on every pre-norm family (LayerNorm and RMSNorm alike).
"""

from __future__ import annotations

import pytest
import torch

import explorer
from explorer.runs import (
    Row,
    Tokens,
    contributions,
    contributions_unavailable,
    lens,
    logit_lens,
    run_prompt,
    token_trajectory,
)

PROB_TOL = 1e-4


def _ids(n: int, seed: int, vocab: int = 97) -> torch.Tensor:
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


def _tokens(ids: torch.Tensor) -> Tokens:
    flat = ids[0]
    return Tokens(flat, [str(int(i)) for i in flat], torch.zeros(len(flat), dtype=torch.bool))


def hf_lens_logits(ref, family: str, hidden: torch.Tensor) -> torch.Tensor:
    """transformers' own final norm and head applied to a residual ``[1, n, D]``."""
    with torch.no_grad():
        if family == "gpt2":
            return ref.lm_head(ref.transformer.ln_f(hidden))
        if family == "bert":
            return ref.cls(hidden)
        if family == "t5":
            x = ref.decoder.final_layer_norm(hidden)
            if getattr(ref.config, "scale_decoder_outputs", ref.config.tie_word_embeddings):
                x = x * ref.config.d_model**-0.5
            return ref.lm_head(x)
        return ref.lm_head(ref.model.norm(hidden))


def _check_lens(lm, ref, family, out_hidden, logits, run, k=5):
    """Every boundary row's top-k vs transformers; the last row is the real output."""
    stream = run.streams["decoder" if family == "t5" else "main"]
    rows = stream.rows()
    n = len(stream.tokens)
    summary = lens(run, rows, range(n), k)
    n_layers = lm.config.n_decoder_layers if family == "t5" else lm.config.n_layers
    # transformers' last hidden state is already normed (BERT: every state is a block output)
    hf_rows = [hf_lens_logits(ref, family, h) for h in out_hidden[:n_layers]]
    hf_rows.append(logits if family != "bert" else hf_lens_logits(ref, family, out_hidden[-1]))
    assert len(hf_rows) == len(rows) == n_layers + 1
    for r, hf_logits in enumerate(hf_rows):
        probs, ids = torch.softmax(hf_logits[0].float(), -1).topk(k, -1)
        torch.testing.assert_close(summary.top_probs[r], probs, atol=PROB_TOL, rtol=0)
        assert torch.equal(summary.top_ids[r], ids), f"row {rows[r].label}"
    torch.testing.assert_close(summary.kl[-1], torch.zeros(n), atol=1e-5, rtol=0)
    return summary


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama", "tiny_qwen2", "tiny_mistral"])
def test_decoder_lens_and_contributions(fixture, request) -> None:
    ref, directory = request.getfixturevalue(fixture)
    lm = explorer.load(directory, device="cpu", dtype="float32")
    ids = _ids(13, seed=3)
    with torch.no_grad():
        out = ref(ids, output_hidden_states=True)
    run = run_prompt(lm.model, lm.config.kind, lm.config.n_heads, _tokens(ids))
    family = "gpt2" if fixture == "tiny_gpt2" else "llama"
    _check_lens(lm, ref, family, out.hidden_states, out.logits, run)
    assert contributions_unavailable(run) is None
    for position in (0, 6, 12):
        token = int(out.logits[0, position].argmax())
        parts = contributions(run, position, token)
        assert len(parts.labels) == 1 + 2 * lm.config.n_layers
        assert parts.logit == pytest.approx(float(out.logits[0, position, token]), abs=1e-4)
        total = float(parts.values.sum()) + parts.constant
        assert total == pytest.approx(parts.logit, abs=1e-3)


def test_bert_lens_through_the_masked_lm_head(tiny_bert) -> None:
    ref, directory = tiny_bert
    lm = explorer.load(directory, device="cpu", dtype="float32")
    ids = _ids(11, seed=4)
    with torch.no_grad():
        out = ref(ids, output_hidden_states=True)
    run = run_prompt(lm.model, "encoder", lm.config.n_heads, _tokens(ids))
    _check_lens(lm, ref, "bert", out.hidden_states, out.logits, run)
    assert "post-norm" in contributions_unavailable(run)
    with pytest.raises(ValueError, match="post-norm"):
        contributions(run, 0, 1)


def test_t5_decoder_lens_and_contributions(tiny_t5) -> None:
    ref, directory = tiny_t5
    lm = explorer.load(directory, device="cpu", dtype="float32")
    source, target = _ids(9, seed=5), _ids(6, seed=6)
    with torch.no_grad():
        out = ref(input_ids=source, decoder_input_ids=target, output_hidden_states=True)
    run = run_prompt(lm.model, "encoder-decoder", lm.config.n_heads, _tokens(source),
                     _tokens(target))
    _check_lens(lm, ref, "t5", out.decoder_hidden_states, out.logits, run)
    for position in range(6):
        token = int(out.logits[0, position].argmin())  # any token works, not just the top
        parts = contributions(run, position, token)
        assert len(parts.labels) == 1 + 3 * lm.config.n_decoder_layers  # attn, cross, mlp
        assert parts.logit == pytest.approx(float(out.logits[0, position, token]), abs=1e-4)
        assert float(parts.values.sum()) + parts.constant == pytest.approx(parts.logit,
                                                                           abs=1e-3)


def test_sublayer_rows_are_resid_mid(tiny_llama) -> None:
    _, directory = tiny_llama
    lm = explorer.load(directory, device="cpu", dtype="float32")
    ids = _ids(10, seed=8)
    _, cache = lm.model.run_with_cache(ids)
    run = run_prompt(lm.model, "decoder", lm.config.n_heads, _tokens(ids))
    rows = run.streams["main"].rows(sublayers=True)
    assert [r.label for r in rows] == ["embeddings", "L0 attn", "L0", "L1 attn", "L1"]
    summary = lens(run, rows, range(10), 3)
    for r, row in enumerate(rows):
        name = (f"blocks.{row.layer}.resid_mid" if row.sublayer else
                f"blocks.{row.layer}.resid_post" if row.layer >= 0 else "blocks.0.resid_pre")
        probs = torch.softmax(lm.model.unembed_residual(cache[name])[0], -1).topk(3, -1)
        torch.testing.assert_close(summary.top_probs[r], probs.values, atol=1e-5, rtol=0)


def test_library_logit_lens_and_trajectory(tiny_llama) -> None:
    _, directory = tiny_llama
    lm = explorer.load(directory, device="cpu", dtype="float32")
    ids = _ids(12, seed=9)
    result = explorer.logit_lens(lm, ids, k=4, sublayers=True)
    assert result.top_ids.shape == result.top_probs.shape == (5, 12, 4)
    assert result.rows[-1] == "L1"
    logits = lm.model(ids)[0]
    torch.testing.assert_close(result.top_probs[-1], torch.softmax(logits, -1).topk(4).values,
                               atol=1e-5, rtol=0)
    run = run_prompt(lm.model, "decoder", lm.config.n_heads, _tokens(ids))
    rows = run.streams["main"].rows()
    targets = [int(t) for t in logits.argmax(-1)[[2, 7]]]
    prob, rank = token_trajectory(run, rows, [2, 7], targets)
    assert prob.shape == rank.shape == (3, 2)
    assert rank[-1].tolist() == [0, 0]  # the model's own prediction ranks first at the end
    torch.testing.assert_close(prob[-1], torch.softmax(logits, -1)[[2, 7], targets],
                               atol=1e-6, rtol=0)
    assert logit_lens is explorer.logit_lens


@pytest.mark.slow
def test_smollm2_lens_matches_transformers(smollm2_pair) -> None:
    ours, ref = smollm2_pair
    ids = ours.encode("The Eiffel Tower is in Paris. The Colosseum is in")
    with torch.no_grad():
        out = ref(ids, output_hidden_states=True)
    run = run_prompt(ours.model, "decoder", ours.config.n_heads, _tokens(ids))
    stream = run.streams["main"]
    rows = [Row(-1), Row(5), Row(17), Row(stream.n_layers - 1)]
    summary = lens(run, rows, range(ids.shape[1]), 5)
    for r, layer in enumerate([0, 6, 18]):
        hf = torch.softmax(hf_lens_logits(ref, "llama", out.hidden_states[layer])[0], -1)
        torch.testing.assert_close(summary.top_probs[r], hf.topk(5).values, atol=1e-3, rtol=0)
    final = torch.softmax(out.logits[0], -1).topk(5)
    torch.testing.assert_close(summary.top_probs[-1], final.values, atol=1e-3, rtol=0)
    assert torch.equal(summary.top_ids[-1], final.indices)
    position = ids.shape[1] - 1
    token = int(final.indices[position, 0])
    parts = contributions(run, position, token)
    assert float(parts.values.sum()) + parts.constant == pytest.approx(parts.logit, abs=1e-3)
    assert parts.logit == pytest.approx(float(out.logits[0, position, token]), abs=1e-2)
