"""Column names that the study's datasets share, so pipelines agree on them in one place."""

# The keys of one generated sample; `*_generations` and `execution_results` both start with them.
GENERATION_KEYS = (
    "model",
    "method",
    "regime",
    "edit_step",
    "api_id",
    "problem_id",
    "subset",
    "sample_idx",
)
