"""Execution metrics, adoption labels and token-level edit metrics (plain library, no Kedro)."""
