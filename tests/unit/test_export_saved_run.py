"""explorer.export.saved_run: a run saved as NPZ reads back equal (tokens, residual streams,
head scores, lens top-k, generated steps, metadata) without the model, and untrusted files
(not a zip, pickles, zip bombs, other formats, newer versions) fail with a clear error."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

import explorer
from explorer.config import ModelConfig
from explorer.export import SavedRunError, generation_arrays, load_run, run_arrays, save_run
from explorer.export.saved_run import run_nbytes
from explorer.generation import GenerationRecord
from explorer.nn import build_model
from explorer.runs import Row, Tokens, lens, run_prompt

torch.set_num_threads(1)
CFG = ModelConfig(d_model=16, n_heads=4, d_mlp=24, d_vocab=37, n_ctx=64, n_layers=3,
                  positional="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2)
PIECES = ["<s>", "=cmd", "ü", "\u200b", "<img src=x>", "日本", "a", "b", "a", "b"]


@pytest.fixture(scope="module")
def run():
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    ids = torch.tensor([1, 5, 9, 3, 7, 11, 4, 6, 4, 6])
    special = torch.tensor([True] + [False] * 9)
    return run_prompt(model, "decoder", CFG.n_heads, Tokens(ids, PIECES, special))


def meta() -> dict:
    return {"model": {"name": "tiny", "config": CFG.to_dict()}, "prompt": "a b <b>é",
            "page": "Attention", "settings": {"attn_layer": 2, "attn_query": "9: b"}}


def test_round_trip_keeps_every_array_and_the_metadata(run, tmp_path) -> None:
    arrays = run_arrays(run, lens_positions=4, k=3,
                        token_text=lambda ids: np.vectorize(lambda i: f"t{i}")(ids.numpy()))
    path = tmp_path / "run.npz"
    save_run(path, arrays, meta())
    saved = explorer.load_run(path)
    assert saved.model == "tiny" and saved.prompt == "a b <b>é"
    assert saved.settings == {"attn_layer": 2, "attn_query": "9: b"}
    assert saved.meta["model"]["config"]["n_kv_heads"] == 2
    ids, pieces = saved.tokens()
    assert ids.tolist() == [1, 5, 9, 3, 7, 11, 4, 6, 4, 6] and pieces == PIECES
    stream = run.streams["main"]
    np.testing.assert_array_equal(saved.residual("main"), stream.boundaries.numpy())
    assert saved.residual().shape == (CFG.n_layers + 1, 10, CFG.d_model)
    np.testing.assert_array_equal(saved.arrays["stream.main.sublayer.attn"],
                                  stream.sublayers["attn"].numpy())
    assert saved.stacks == ["self"] and saved.streams == ["main"]
    for name, values in run.scores("self").items():
        np.testing.assert_array_equal(saved.scores("self")[name], values.numpy())
    expected = lens(run, stream.rows(), [6, 7, 8, 9], 3)
    got = saved.lens("main")
    np.testing.assert_array_equal(got["top_ids"], expected.top_ids.numpy())
    np.testing.assert_allclose(got["top_probs"], expected.top_probs.numpy())
    assert got["rows"].tolist() == ["embeddings", "L0", "L1", "L2"]
    assert got["top_tokens"][2, 1, 0] == f"t{got['top_ids'][2, 1, 0]}"
    assert got["positions"].tolist() == [6, 7, 8, 9] and got["top_ids"].shape == (4, 4, 3)
    assert saved.meta["arrays"]["stream.main.boundaries"]["shape"] == [4, 10, 16]
    # the file is plain NumPy: readable with np.load alone, no pickles
    with np.load(path, allow_pickle=False) as raw:
        assert json.loads(raw["meta.json"].tobytes())["format"] == "transformer-explorer-run"


def test_lens_top_row_is_the_models_own_prediction(run) -> None:
    arrays = run_arrays(run, residuals=False, scores=False, lens_positions=3, k=2)
    logits = run.model(run.streams["main"].tokens.ids[None])[0]  # [N, V]
    top = logits.softmax(-1).topk(2)
    np.testing.assert_array_equal(arrays["lens.main.top_ids"][-1], top.indices[-3:].numpy())
    np.testing.assert_allclose(arrays["lens.main.top_probs"][-1], top.values[-3:].detach(),
                               atol=1e-5)
    assert not any(name.startswith(("stream.main.b", "scores.")) for name in arrays)
    assert lens(run, [Row(-1)], [0], 1).top_ids.shape == (1, 1, 1)


def test_sizes_are_estimated_from_the_streams(run) -> None:
    arrays = run_arrays(run, scores=False, lens_positions=0)
    actual = sum(a.nbytes for a in arrays.values())
    assert run_nbytes(run) == pytest.approx(actual, rel=0.5)
    assert run_nbytes(run, residuals=False) < actual / 5


def test_generation_steps_round_trip() -> None:
    record = GenerationRecord(prompt_ids=[1, 2, 3])
    for token, probs in ((5, [0.5, 0.3]), (6, [0.9])):
        record.token_ids.append(token)
        record.texts.append(f" t{token}")
        record.tokens.append(f"␣t{token}")
        record.probs.append(probs[0])
        record.entropies.append(1.0)
        record.top_ids.append([token, 9][:len(probs)])
        record.top_probs.append(probs)
    saved = load_run(save_run(None, generation_arrays(record), meta()))
    steps = saved.generation
    assert steps["token_ids"].tolist() == [5, 6] and steps["tokens"].tolist() == ["␣t5", "␣t6"]
    assert steps["top_ids"].tolist() == [[5, 9], [6, -1]]
    assert np.isnan(steps["top_probs"][1, 1]) and steps["prompt_ids"].tolist() == [1, 2, 3]


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_untrusted_files_are_refused_with_a_clear_error() -> None:
    good = save_run(None, {"x": np.zeros(3)}, meta())
    cases = {
        "not an NPZ": b"<html>hello</html>",
        "Python objects": _zip({"meta.json.npy": _npy(np.frombuffer(good, np.uint8)[:0]),
                                "x.npy": _npy(np.array([{"a": 1}], dtype=object), True)}),
        "not NumPy arrays": _zip({"meta.json.npy": b"", "evil.py": b"print(1)"}),
        "no meta.json": _npz({"x": np.zeros(2)}),
        "unpacks to more": _zip({"big.npy": b"\0" * (2 * 2**20)}),
        "not valid JSON": _npz({"meta.json": np.frombuffer(b"{nope", np.uint8)}),
        "not a saved run": _npz({"meta.json": np.frombuffer(b'{"format": "other"}', np.uint8)}),
        "newer version": _npz({"meta.json": np.frombuffer(
            b'{"format": "transformer-explorer-run", "version": 99}', np.uint8)}),
    }
    for reason, data in cases.items():
        with pytest.raises(SavedRunError, match=reason):
            load_run(data, max_bytes=2**20)
    with pytest.raises(SavedRunError, match="larger than"):
        load_run(good, max_bytes=len(good) - 1)
    with pytest.raises(SavedRunError, match="larger than"):
        load_run(io.BytesIO(good), max_bytes=100)
    assert load_run(io.BytesIO(good)).arrays["x"].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="reserved"):
        save_run(None, {"meta.json": np.zeros(1)}, meta())


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_a_saved_run_draws_without_its_model(run) -> None:
    from explorer.ui.saved_run_view import lens_figure, norms_figure

    arrays = run_arrays(run, lens_positions=4, k=2,
                        token_text=lambda ids: np.vectorize(lambda i: f"<t{i}>")(ids.numpy()))
    saved = load_run(save_run(None, arrays, meta()))
    lens_fig = lens_figure(saved, "main", saved.lens("main"))
    assert lens_fig.layout.title.text.startswith("Saved logit lens")
    text = json.dumps(lens_fig.to_plotly_json(), default=str)
    assert "<t" not in text and "&lt;t" in text  # token texts from the file are escaped
    norms = norms_figure(saved, "main")
    expected = np.log10(np.linalg.norm(run.streams["main"].boundaries.numpy(), axis=-1))
    np.testing.assert_allclose(np.asarray(norms.data[0].z, dtype=float), expected, rtol=1e-5)
