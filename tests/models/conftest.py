import pytest
import torch

from apiedit_kedro.models.tiny import build_tiny_model


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy CI box they spin."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
