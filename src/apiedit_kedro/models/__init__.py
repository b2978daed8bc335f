"""Models: model cards, offline loading, tiny test models, prompt formats, batched generation, cache.

This package never imports Kedro; pipelines pass it plain parameter dicts.
"""
