"""Top-p filtering: the fast path (top candidates only) equals the definition on a full sort."""

import pytest
import torch

from apiedit_kedro.models.generation import _nucleus


def _nucleus_by_full_sort(probabilities: torch.Tensor, top_p: float) -> torch.Tensor:
    ordered, order = probabilities.sort(dim=-1, descending=True)
    mass_before = ordered.cumsum(dim=-1) - ordered
    ordered = ordered.masked_fill(mass_before >= top_p, 0.0)
    return torch.zeros_like(probabilities).scatter(-1, order, ordered)


@pytest.mark.parametrize("sharpness", [0.3, 3.0, 12.0])  # 0.3: mass spread beyond the candidates
@pytest.mark.parametrize("top_p", [0.5, 0.95])
def test_nucleus_equals_the_full_sort_definition(sharpness, top_p):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 20_000, generator=generator) * sharpness
    probabilities = torch.softmax(logits, dim=-1)
    kept = _nucleus(probabilities, top_p)
    assert torch.equal(kept, _nucleus_by_full_sort(probabilities, top_p))
    assert (kept > 0).sum(dim=-1).min() >= 1
    assert bool((kept.sum(dim=-1) >= top_p - 1e-6).all())
