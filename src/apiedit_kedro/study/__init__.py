"""The study's regimes as a plain library (no Kedro): which edits and problems to run, the prompts the
model sees, instant and sequential editing with generation, and execution of the generations in the
edited and pristine worlds. The Kedro pipelines `instant`, `sequential` and `evaluation` wire these
functions; a notebook can call them directly.
"""
