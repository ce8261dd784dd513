"""explorer.config.ModelConfig: defaults, validation errors naming the bad field, round trips."""

import dataclasses

import pytest

from explorer.config import ModelConfig

BASE = dict(d_model=16, n_heads=4, d_mlp=32, d_vocab=50, n_ctx=8, n_layers=2)


def test_defaults_are_derived():
    cfg = ModelConfig(**BASE)
    assert cfg.n_kv_heads == 4 and cfg.d_head == 4
    assert cfg.activation == "gelu" and cfg.final_norm is True
    assert cfg.n_decoder_layers == 2 and cfg.causal
    assert ModelConfig(**BASE, mlp="swiglu").activation == "silu"
    assert ModelConfig(**BASE, mlp="geglu").activation == "gelu_tanh"
    assert ModelConfig(**BASE, norm_position="post").final_norm is False
    assert not ModelConfig(**BASE, kind="encoder").causal
    # T5-style: d_head given explicitly need not divide d_model
    assert ModelConfig(**{**BASE, "n_heads": 3}, d_head=8).d_head == 8


def test_frozen_hashable_and_replace_revalidates():
    cfg = ModelConfig(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 8  # type: ignore[misc]
    assert hash(cfg) == hash(ModelConfig(**BASE))
    assert cfg.replace(n_layers=5).n_layers == 5 and cfg.n_layers == 2
    with pytest.raises(ValueError, match="n_kv_heads"):
        cfg.replace(n_kv_heads=3)


def test_dict_round_trip_ignores_unknown_keys():
    cfg = ModelConfig(**BASE, positional="rope", n_kv_heads=2, extra={"source": "test"})
    data = cfg.to_dict()
    assert data["positional"] == "rope" and data["extra"] == {"source": "test"}
    assert ModelConfig.from_dict({**data, "not_a_field": 1}) == cfg


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"d_model": 18}, "d_model"),  # not divisible by n_heads
        ({"n_kv_heads": 3}, "n_kv_heads"),  # n_heads % n_kv_heads
        ({"n_kv_heads": 8}, "n_kv_heads"),
        ({"n_kv_heads": 0}, "n_kv_heads"),
        ({"positional": "absolute"}, "positional"),
        ({"norm": "batchnorm"}, "norm"),
        ({"norm_position": "middle"}, "norm_position"),
        ({"mlp": "swish"}, "mlp"),
        ({"kind": "seq2seq"}, "kind"),
        ({"activation": "tanh"}, "activation"),
        ({"d_mlp": 0}, "d_mlp"),
        ({"d_vocab": -1}, "d_vocab"),
        ({"n_ctx": 0}, "n_ctx"),
        ({"n_layers": -1}, "n_layers"),
        ({"mlp": "moe", "experts_top_k": 9}, "experts_top_k"),
        ({"mlp": "moe", "experts_top_k": 0}, "experts_top_k"),
        ({"window": -1}, "window"),
        ({"positional": "rope", "d_head": 5}, "d_head"),
        ({"positional": "sinusoidal", "d_model": 15, "n_heads": 3}, "d_model"),
    ],
)
def test_validation_error_names_the_bad_field(changes, field):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{**BASE, **changes})


def test_error_message_shows_the_allowed_choices():
    with pytest.raises(ValueError, match="alibi") as err:
        ModelConfig(**BASE, positional="absolute")
    assert "'absolute'" in str(err.value)
