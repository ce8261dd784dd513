"""explorer.ui.generate helpers that need no running app: the session's generation state, the
prompt-fit notices, hovers and the chosen token's rank."""

from __future__ import annotations

import torch

from explorer.generation import GenerationRecord, GenerationStep, fit_prompt
from explorer.ui.generate import (
    STATE,
    Settings,
    chosen_rank,
    fit_notices,
    generation_state,
    hover_texts,
    storage_notice,
)


def step(index: int, token_id: int, top_ids: list[int], top_probs: list[float],
         finished: str | None = None) -> GenerationStep:
    prob = top_probs[top_ids.index(token_id)] if token_id in top_ids else 0.01
    return GenerationStep(index=index, token_id=token_id, text=f"t{token_id}",
                          token=f"t{token_id}", prob=prob, top_ids=top_ids,
                          top_probs=top_probs, entropy=0.5 + index, finished=finished,
                          elapsed=0.1 * (index + 1), ttft=0.1, position=3 + index)


def record_of(*steps: GenerationStep) -> GenerationRecord:
    record = GenerationRecord(prompt_ids=[1, 2, 3])
    for s in steps:
        record.add(s, [f"<{i}>" for i in s.top_ids])
    return record


def test_generation_state_is_kept_for_the_same_model_and_emptied_for_another() -> None:
    session: dict = {}
    state = generation_state(session, "tiny (float32)")
    assert session[STATE] is state and state == {"model": "tiny (float32)"}
    state.update(record=record_of(step(0, 5, [5, 6], [0.7, 0.2], "eos")), settings=("x",))
    assert generation_state(session, "tiny (float32)") is state and "record" in state
    again = generation_state(session, "other (float32)")
    assert again is state and again == {"model": "other (float32)"}


def test_an_interrupted_run_is_marked_stopped_and_a_finished_one_kept() -> None:
    session: dict = {}
    state = generation_state(session, "m")
    state.update(record=record_of(step(0, 5, [5, 6], [0.7, 0.2])), running=True)
    generation_state(session, "m")  # the rerun that Stop (or any widget) caused
    assert state["running"] is False and state["record"].finished == "stopped"
    state.update(record=record_of(step(0, 5, [5, 6], [0.7, 0.2], "max_new_tokens")),
                 running=True)
    generation_state(session, "m")
    assert state["record"].finished == "max_new_tokens"


def test_chosen_rank_finds_the_token_among_the_candidates_or_gives_minus_one() -> None:
    record = record_of(step(0, 6, [5, 6, 7], [0.5, 0.3, 0.1]), step(1, 9, [5, 6], [0.6, 0.3]))
    assert chosen_rank(record, 0) == 1
    assert chosen_rank(record, 1) == -1  # sampled outside the top candidates


def test_hover_texts_name_the_chosen_token_entropy_and_alternatives() -> None:
    record = record_of(step(0, 6, [5, 6], [0.625, 0.25]), step(1, 5, [5], [1.0]))
    hovers = hover_texts(record)
    assert len(hovers) == 2
    assert "chosen t6" in hovers[0] and "entropy 0.50 nats" in hovers[0]
    assert "62.5%  <5>" in hovers[0] and "25.0%  <6>" in hovers[0]
    assert "entropy 1.50 nats" in hovers[1]


def test_fit_notices_for_a_decoder_and_an_encoder_decoder() -> None:
    ids = torch.arange(30).reshape(1, -1)
    decoder = fit_prompt(ids, 24, 8)  # 24 - 8 + 1 = 17 prompt tokens kept
    assert fit_notices(decoder, 30, 24, seq2seq=False) == [(
        "warning", "The prompt has 30 tokens; the first 13 were cut to fit the context of 24 "
                   "together with 8 new tokens.")]
    bounded = fit_prompt(ids[:, :2], 24, 40)  # 23 new tokens leave room for 2 prompt tokens
    assert fit_notices(bounded, 2, 24, seq2seq=False) == [
        ("info", "At most 23 new tokens fit the context.")]
    t5 = fit_prompt(ids, 24, 8, shared_context=False)
    assert fit_notices(t5, 30, 24, seq2seq=True) == [(
        "warning", "The prompt has 30 tokens; the first 6 were cut to fit the encoder's 24 "
                   "positions.")]
    assert fit_notices(fit_prompt(ids[:, :5], 24, 8), 5, 24, seq2seq=False) == []


def test_storage_notice_says_what_a_long_run_keeps() -> None:
    assert storage_notice("heads") is None
    assert storage_notice("layers") == "This run is long: attention is kept as the mean over " \
                                       "heads only."
    assert storage_notice("none") == "This run is long: attention is kept not at all."


def test_settings_key_is_the_tuple_a_replay_link_compares() -> None:
    settings = Settings("hi", 0.8, 5, 1.0, 6, 3, True)
    assert settings.key() == ("hi", 0.8, 5, 1.0, 6, 3, True)
    assert settings.key() == Settings("hi", 0.8, 5, 1.0, 6, 3, True).key()
