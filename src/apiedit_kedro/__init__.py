"""apiedit_kedro: can model editing teach a code LLM that an API changed, and at what cost?

A Kedro project reproducing and extending "Understanding Robustness of Model Editing in Code LLMs"
(arXiv 2511.03182). The engines (`apis`, `sandbox`, `models`, `editing`, `metrics`) are plain
libraries usable from a notebook; `pipelines` wires them into Kedro.
"""

__version__ = "0.1.0"
