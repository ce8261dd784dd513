"""Pure figure builders: numbers (arrays, frames) in, plotly/altair figures out."""

from explorer.viz.attention import (
    attention_heatmap,
    attention_lines,
    head_map_chart,
    head_small_multiples,
    pattern_frame,
    query_attention_bars,
)
from explorer.viz.heatmap_cells import COLOUR_SCALES, pool_matrix
from explorer.viz.interventions import (
    attribution_heatmap,
    distribution_comparison,
    lens_difference_grid,
    patching_heatmap,
)
from explorer.viz.positional import (
    bar_chart,
    line_chart,
    pair_rotation_chart,
    pca_trajectory,
    value_heatmap,
)
from explorer.viz.tokens import display_token, escape_for_plotly, unique_labels

__all__ = [
    "COLOUR_SCALES",
    "attention_heatmap",
    "attention_lines",
    "attribution_heatmap",
    "bar_chart",
    "display_token",
    "distribution_comparison",
    "escape_for_plotly",
    "head_map_chart",
    "head_small_multiples",
    "lens_difference_grid",
    "line_chart",
    "pair_rotation_chart",
    "patching_heatmap",
    "pattern_frame",
    "pca_trajectory",
    "pool_matrix",
    "query_attention_bars",
    "unique_labels",
    "value_heatmap",
]
