"""Transformer Explorer: the Streamlit entry point (`streamlit run app.py`).

Sets up the page, draws the shared sidebar (model picker) and runs the chosen page. To add a
page, write ``app_pages/<name>.py`` following `explorer.ui.page` and add one ``st.Page`` line to
its section in ``PAGES`` below; nothing else changes.
"""

from __future__ import annotations

import logging

import streamlit as st

from explorer.ui import render_sidebar

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

# Section -> pages, in sidebar order. The first page of the first section is the home page.
PAGES: dict[str, list[st.Page]] = {
    "Model": [
        # The default page is served at "/" (Streamlit ignores its url_path).
        st.Page("app_pages/overview.py", title="Overview", icon=":material/account_tree:",
                default=True),
        st.Page("app_pages/tokenizer.py", title="Tokenizer", icon=":material/text_fields:",
                url_path="tokenizer"),
    ],
    "Attention": [st.Page("app_pages/attention.py", title="Attention heads",
                          icon=":material/grid_on:", url_path="attention")],
    "Generation": [st.Page("app_pages/generate.py", title="Generate", icon=":material/edit:",
                           url_path="generate")],
    "Representations": [
        st.Page("app_pages/layers.py", title="Layers", icon=":material/stacks:",
                url_path="layers"),
        st.Page("app_pages/positional.py", title="Positional encodings",
                icon=":material/timeline:", url_path="positional"),
    ],
    "Interventions": [st.Page("app_pages/interventions.py", title="Interventions",
                              icon=":material/science:", url_path="interventions")],
    "Images": [st.Page("app_pages/vision.py", title="Image attention", icon=":material/image:",
                       url_path="images")],
    "Learn": [st.Page("app_pages/tour.py", title="Guided tour", icon=":material/school:",
                      url_path="tour"),
              st.Page("app_pages/lab_attention.py", title="Attention lab",
                      icon=":material/calculate:", url_path="lab-attention"),
              st.Page("app_pages/lab_architecture.py", title="Architecture lab",
                      icon=":material/build:", url_path="lab-architecture"),
              st.Page("app_pages/lab_cost.py", title="Cost calculator",
                      icon=":material/speed:", url_path="lab-cost")],
}

st.set_page_config(
    page_title="Transformer Explorer",
    page_icon=":material/hub:",
    layout="wide",
    initial_sidebar_state="expanded",
)
page = st.navigation(PAGES)
render_sidebar()
page.run()
