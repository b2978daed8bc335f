"""The dataset contracts between pipelines, written out independently of the code under test."""

GENERATION_CONTRACT = {
    "model",
    "method",
    "regime",
    "edit_step",
    "api_id",
    "problem_id",
    "subset",
    "sample_idx",
    "completion",
    "finish_reason",
    "gen_seconds",
}
EXECUTION_CONTRACT = GENERATION_CONTRACT - {"completion", "finish_reason", "gen_seconds"} | {
    "world",
    "compiles",
    "asserts_passed",
    "asserts_total",
    "full_pass",
    "error_type",
    "error_message",
    "new_api_calls",
    "old_api_refs",
    "pristine_full_pass",
}
PASS_AT_K_CONTRACT = {
    "model",
    "method",
    "regime",
    "edit_step",
    "subset",
    "level",
    "k",
    "value",
    "n_problems",
}
