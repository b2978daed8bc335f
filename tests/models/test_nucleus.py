"""Top-p filtering: the fast path (top candidates only) equals the definition on a full sort, and
a draw does not flip when two nearly equal tokens swap rank."""

import pytest
import torch

from apiedit_kedro.models.generation import DecodingParams, _draw, _nucleus


def _nucleus_by_full_sort(probabilities: torch.Tensor, top_p: float) -> torch.Tensor:
    ordered, order = probabilities.sort(dim=-1, descending=True)
    mass_before = ordered.cumsum(dim=-1) - ordered
    ordered = ordered.masked_fill(mass_before >= top_p, 0.0)
    return torch.zeros_like(probabilities).scatter(-1, order, ordered)


def _as_dense(nuclei, like: torch.Tensor) -> torch.Tensor:
    dense = torch.zeros_like(like)
    for line, (ids, probs) in enumerate(nuclei):
        dense[line, ids] = probs
    return dense


@pytest.mark.parametrize("sharpness", [0.3, 3.0, 12.0])  # 0.3: mass spread beyond the candidates
@pytest.mark.parametrize("top_p", [0.5, 0.95])
def test_nucleus_equals_the_full_sort_definition(sharpness, top_p):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 20_000, generator=generator) * sharpness
    probabilities = torch.softmax(logits, dim=-1)
    nuclei = _nucleus(probabilities, top_p)
    assert torch.equal(
        _as_dense(nuclei, probabilities), _nucleus_by_full_sort(probabilities, top_p)
    )
    for ids, probs in nuclei:
        assert len(ids) >= 1 and float(probs.sum()) >= top_p - 1e-6
        assert bool((ids[:-1] < ids[1:]).all())  # token-id order


def test_a_rows_nucleus_does_not_depend_on_the_other_rows():
    generator = torch.Generator().manual_seed(1)
    flat = torch.softmax(torch.randn(1, 20_000, generator=generator) * 0.3, dim=-1)
    sharp = torch.softmax(torch.randn(1, 20_000, generator=generator) * 12.0, dim=-1)
    together = _nucleus(torch.cat([flat, sharp]), 0.95)
    for alone, beside in zip(
        [*_nucleus(flat, 0.95), *_nucleus(sharp, 0.95)], together, strict=True
    ):
        assert all(torch.equal(a, b) for a, b in zip(alone, beside, strict=True))


def test_a_draw_survives_two_nearly_equal_tokens_swapping_rank():
    """Batched and single-row forwards round differently in the last bits; where two tokens are
    nearly tied that can swap their rank, and the sample must not change with it."""
    params = DecodingParams(max_new_tokens=1, temperature=1.0, top_p=0.95, n_samples=1, seed=0)
    logits = torch.full((1, 50), -4.0)
    logits[0, 7], logits[0, 31] = 2.0 + 1e-6, 2.0  # together most of the mass, 7 ranked first
    swapped = logits.clone()
    swapped[0, 7], swapped[0, 31] = 2.0, 2.0 + 1e-6
    seeds = range(200)
    drawn = [_draw(logits, [torch.Generator().manual_seed(s)], params).item() for s in seeds]
    drawn_swapped = [
        _draw(swapped, [torch.Generator().manual_seed(s)], params).item() for s in seeds
    ]
    assert set(drawn) >= {7, 31}
    assert drawn == drawn_swapped


def test_without_top_p_a_draw_is_a_multinomial_over_the_whole_vocabulary():
    params = DecodingParams(max_new_tokens=1, temperature=0.7, top_p=1.0, n_samples=1, seed=0)
    scores = torch.randn(3, 5_000, generator=torch.Generator().manual_seed(1))
    probabilities = torch.softmax(scores / 0.7, dim=-1)
    for seed in range(20):
        drawn = _draw(scores, [torch.Generator().manual_seed(seed + i) for i in range(3)], params)
        expected = [
            torch.multinomial(
                probabilities[i], 1, generator=torch.Generator().manual_seed(seed + i)
            )
            for i in range(3)
        ]
        assert torch.equal(drawn, torch.cat(expected))
