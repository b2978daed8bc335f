import pytest

from apiedit_kedro.models.tiny import build_tiny_model


@pytest.fixture(scope="module")
def tiny_llama():
    return build_tiny_model("llama", seed=0)


@pytest.fixture(scope="session")
def code_prompts():
    """Code prompts of different token lengths, so batches are really left-padded."""
    return CODE_PROMPTS


CODE_PROMPTS = [
    "def add(a, b):\n",
    "import os\n\ndef join_all(parts):\n    return",
    "x = 1",
    'def count_words(text):\n    """Count the words."""\n',
]
