"""Interventions page on every family (AppTest, tiny random models, no download): T5 ablates
a decoder cross-attention head (the shown distribution is the model's with that slice of
cross_attn.z zeroed), generates with it, patches its encoder with closed-form cells and its
decoder, attributes to self and cross heads; a BERT-like encoder reads everything at its mask
token; an encoder without a masked-LM head gets a message."""

from __future__ import annotations

import app_helpers
import numpy as np
import pytest
import torch
from app_helpers import model_in_store
from test_interventions_page import array, figures, open_page, patch_rows

from explorer.config import ModelConfig
from explorer.nn import build_model

T5 = ModelConfig(d_model=16, n_heads=4, d_mlp=24, d_vocab=37, n_ctx=64, n_layers=2,
                 kind="encoder-decoder", positional="relative", norm="rmsnorm", mlp="geglu",
                 n_decoder_layers=3, name="tiny-t5", family="t5")
BERT = dict(d_model=32, n_heads=4, d_mlp=64, d_vocab=37, n_ctx=64, n_layers=2, kind="encoder",
            positional="learned", norm="layernorm", norm_position="post", mlp="gelu",
            qkv_bias=True, out_bias=True, mlp_bias=True)
MASK_ID = 10  # the word "mask" under the tests' WordTokenizer


def bars(at, key: str) -> tuple[np.ndarray, np.ndarray]:
    data = figures(at)[key]["data"]
    return tuple(array(trace["x"]) for trace in data[:2])


def words(text: str) -> torch.Tensor:
    return torch.tensor([app_helpers.WordTokenizer().encode(text)])


def test_t5_ablates_a_cross_attention_head_and_patches_both_stacks(app) -> None:
    prompt, decoder = "one two three four", "uno dos tres"
    with model_in_store(app, "tiny-t5", T5):
        at = open_page(app, prompt, int_stack="cross", int_heads=[(1, 2)],
                       int_clean="alpha beta gamma delta", int_corrupt="alpha beta zeta delta",
                       int_answer="alpha", int_distractor="delta")
        at.text_input(key="int_decoder_text").set_value(decoder).run()
        assert not at.exception
        text = " ".join(m.value for m in at.markdown).replace("\\", "")  # markdown escapes
        assert "Zero ablation of decoder cross-attention head L1H2" in text
        torch.manual_seed(0)  # the store's model: same seed, same config
        model = build_model(T5).eval()

        def zero_head(z: torch.Tensor) -> torch.Tensor:
            z = z.clone()
            z[:, 2] = 0
            return z

        with torch.no_grad():
            before = torch.softmax(model(words(prompt), words(decoder))[0, -1], -1)
            after = torch.softmax(model(words(prompt), words(decoder), edits={
                "decoder.blocks.1.cross_attn.z": zero_head})[0, -1], -1)
        top = before.topk(10).indices
        shown_before, shown_after = bars(at, "int_ablate_dist")
        assert shown_before[:10] == pytest.approx(before[top].tolist(), abs=1e-5)
        assert shown_after[:10] == pytest.approx(after[top].tolist(), abs=1e-5)
        lens = figures(at)["int_ablate_lens"]["data"][0]
        assert lens["y"] == ["embeddings", "L0", "L1", "L2"]  # the decoder's rows
        # self and cross heads in the attribution, adding up
        dla = figures(at)["int_dla_fig"]["data"][0]
        assert list(dla["x"]) == [f"H{h}" for h in range(4)] + [f"X{h}" for h in range(4)]
        # patch the encoder: the differing position restores the clean run at block 0
        at.radio(key="int_patch_stack").set_value("encoder").run()
        at.button(key="int_patch_run").click().run()
        assert not at.exception
        rows = patch_rows(at)
        assert len(rows) == 2 * 5  # 2 encoder layers x 5 tokens
        layer0 = rows[rows["row_index"] == 0].set_index("col_index")["normalised"]
        assert layer0[3] == pytest.approx(1.0, abs=1e-4)
        assert layer0[[0, 1, 2, 4]].tolist() == pytest.approx([0, 0, 0, 0], abs=1e-4)
        at.radio(key="int_patch_stack").set_value("decoder").run()
        at.button(key="int_patch_run").click().run()
        assert len(patch_rows(at)) == 3 * 4  # 3 decoder layers x 4 decoder tokens
        # generation with the ablation; A vs B on the cross-attention
        at.number_input(key="int_gen_max").set_value(3)
        at.button(key="int_gen_start").click().run()
        assert not at.exception
        assert len(at.session_state["int_generated"][1][1].texts) == 3
        at.radio(key="int_cmp_stack").set_value("cross").run()
        assert not at.exception and "int_cmp_attn_B" in figures(at)


def test_an_encoder_reads_its_mask_token(app, monkeypatch) -> None:
    monkeypatch.setattr(app_helpers.WordTokenizer, "mask_token_id", MASK_ID, raising=False)
    cfg = ModelConfig(name="tiny-bert", **BERT)
    prompt = "the cat mask on the mat"
    with model_in_store(app, "tiny-bert", cfg):
        at = open_page(app, prompt, int_heads=[(0, 1)], int_mode="mean",
                       int_clean="beta mask gamma", int_corrupt="zeta mask gamma",
                       int_answer="beta", int_distractor="gamma")
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        with torch.no_grad():
            before = torch.softmax(model(words(prompt))[0, 3], -1)  # <s> the cat [mask]
        shown_before, _ = bars(at, "int_ablate_dist")
        assert shown_before[:10] == pytest.approx(before.topk(10).values.tolist(), abs=1e-5)
        assert "at the mask token (position 3)" in figures(at)["int_ablate_dist"][
            "layout"]["title"]["text"]
        infos = " ".join(i.value for i in at.info)
        assert "does not generate text" in infos
        assert "post-norm" in infos  # no direct logit attribution through a post-norm
        assert any("mask token (position 2)" in c.value for c in at.caption)
        at.button(key="int_patch_run").click().run()
        assert not at.exception
        assert len(patch_rows(at)) == 2 * 4
    headless = ModelConfig(name="tiny-minilm", **{**BERT, "has_unembed": False})
    with model_in_store(app, "tiny-minilm", headless):
        app.run()
        assert any("no unembedding" in i.value for i in app.info)


def test_ids_past_the_tokenizer_show_their_number() -> None:
    """A model whose embedding has more rows than its tokenizer has pieces (padded
    vocabularies; a random model predicting one): the label says which id, never fails."""
    from explorer.ui.layers import token_texts

    class Short(app_helpers.WordTokenizer):
        def convert_ids_to_tokens(self, ids):
            return [None if i >= 32 else f"w{i}" for i in ids]

    texts = token_texts(Short(), torch.tensor([[3, 40], [40, 3]]))
    assert texts.tolist() == [["w3", "⟨id 40⟩"], ["⟨id 40⟩", "w3"]]
