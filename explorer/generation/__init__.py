"""KV-cache streaming generation, sampling and chat templates (no streamlit here)."""

from explorer.generation.decode import GenerationStep, PromptFit, fit_prompt, generate
from explorer.generation.record import GenerationRecord, attention_storage
from explorer.generation.sampling import (
    SamplingParams,
    apply_temperature,
    entropy,
    sample,
    sampling_distribution,
    top_k_filter,
    top_p_filter,
)
from explorer.generation.text import (
    IncrementalDetokenizer,
    chat_ids,
    end_token_ids,
    prompt_ids,
    validate_messages,
)

__all__ = [
    "GenerationRecord",
    "GenerationStep",
    "IncrementalDetokenizer",
    "PromptFit",
    "SamplingParams",
    "apply_temperature",
    "attention_storage",
    "chat_ids",
    "end_token_ids",
    "entropy",
    "fit_prompt",
    "generate",
    "prompt_ids",
    "sample",
    "sampling_distribution",
    "top_k_filter",
    "top_p_filter",
    "validate_messages",
]
