"""Interventions: change something inside the model and see what moves. Ablations and
activation patching are edits passed through one call (`explorer.nn.capture`), never left
on the shared model; direct logit attribution reads the prompt's shared run."""

from explorer.interventions.ablation import (
    MODES,
    PREFIXES,
    Ablation,
    Metric,
    Outcome,
    ablation_edits,
    logit_diff_metric,
    outcome,
    outcome_of_logits,
    outcome_of_run,
)
from explorer.interventions.attribution import HeadAttribution, head_attribution
from explorer.interventions.patching import (
    SITE_LABELS,
    SITES,
    GridPlan,
    PatchGrid,
    column_labels,
    patch_grid,
    patched_outcome,
    plan_grid,
)

__all__ = [
    "MODES",
    "PREFIXES",
    "SITES",
    "SITE_LABELS",
    "Ablation",
    "GridPlan",
    "HeadAttribution",
    "Metric",
    "Outcome",
    "PatchGrid",
    "ablation_edits",
    "column_labels",
    "head_attribution",
    "logit_diff_metric",
    "outcome",
    "outcome_of_logits",
    "outcome_of_run",
    "patch_grid",
    "patched_outcome",
    "plan_grid",
]
