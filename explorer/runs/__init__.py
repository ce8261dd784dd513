"""The run layer: one forward of one prompt, kept small, read by every view
(``ARCHITECTURE.md``, "One run, many views"), and the one memo class the app caches with."""

from explorer.runs.induction import InductionResult, induction_test
from explorer.runs.layer_views import (
    Contributions,
    LogitLens,
    StreamNorms,
    contributions,
    contributions_unavailable,
    cosine_matrix,
    final_logprobs,
    lens,
    lens_stream,
    logit_lens,
    next_token_loss,
    pca_layers,
    stream_norms,
    token_trajectory,
)
from explorer.runs.memo import LRUMemo, nbytes_of
from explorer.runs.prompt_run import (
    STACKS_BY_KIND,
    PromptRun,
    ResidualStream,
    Rollout,
    Row,
    StackRun,
    StackSpec,
    Tokens,
    run_prompt,
)

__all__ = [
    "STACKS_BY_KIND",
    "Contributions",
    "InductionResult",
    "LRUMemo",
    "LogitLens",
    "PromptRun",
    "ResidualStream",
    "Rollout",
    "Row",
    "StackRun",
    "StackSpec",
    "StreamNorms",
    "Tokens",
    "contributions",
    "contributions_unavailable",
    "cosine_matrix",
    "final_logprobs",
    "induction_test",
    "lens",
    "lens_stream",
    "logit_lens",
    "nbytes_of",
    "next_token_loss",
    "pca_layers",
    "run_prompt",
    "stream_norms",
    "token_trajectory",
]
