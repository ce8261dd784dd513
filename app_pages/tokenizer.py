"""Tokenizer: type text, see its tokens (pieces and ids), and the chat template's output."""

from __future__ import annotations

import streamlit as st

from explorer.ui import page_header, require_model
from explorer.ui.export import begin_page, share_panel
from explorer.ui.resources import model_label
from explorer.ui.widgets import chips_for, prompt_box, render_token_chips, tokenize
from explorer.viz.token_chips import show_invisible

page_header(
    "Tokenizer",
    "A model never sees characters: the tokenizer cuts text into *tokens* and the model sees "
    "their ids. Spaces show as `␣`, newlines as `↵`, invisible characters as escapes such as "
    "`\\u200b`; special tokens are pink. Hover a chip for its raw piece.",
)
lm = require_model()
begin_page("Tokenizer")
share_panel(lm)
tokenizer = lm.tokenizer
label = model_label(lm)

text = prompt_box("Text to tokenize", page_key="tokenizer")
ids, pieces = tokenize(label, text, tokenizer)
chips = chips_for(tokenizer, ids, pieces)

n_special = sum(chip.special for chip in chips)
counts = st.columns(3)
counts[0].metric("Tokens", f"{len(ids):,}")
counts[1].metric("Characters", f"{len(text):,}")
counts[2].metric("Special tokens", n_special)
render_token_chips(chips)

with st.expander("Tokens as a table"):
    st.dataframe(
        {"position": [c.position for c in chips], "id": [c.token_id for c in chips],
         "piece": [c.piece for c in chips], "shown as": [c.label for c in chips],
         "special": [c.special for c in chips]},
        hide_index=True, width="stretch",
    )

template = getattr(tokenizer, "chat_template", None)
if template:
    st.subheader("Chat template")
    st.caption("What an instruct model actually reads when your text is a user message.")
    try:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    except Exception as exc:  # templates are Jinja from the model repo: may reject input
        st.warning(f"The chat template could not be applied ({type(exc).__name__}).")
    else:
        st.code(show_invisible(rendered), language=None, wrap_lines=True)
        st.caption(f"{len(tokenizer(rendered, add_special_tokens=False)['input_ids']):,} "
                   "tokens with the template.")
else:
    st.caption("This tokenizer has no chat template (not an instruct model).")
