import pytest
import torch

from apiedit_kedro.models.tiny import TINY_FAMILIES, build_tiny_model


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_model_is_small_deterministic_and_generates(family):
    model, tokenizer = build_tiny_model(family, seed=1)
    expected_class = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
    assert type(model).__name__ == expected_class.get(family, "Gemma3ForCausalLM")
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert not model.training and next(model.parameters()).dtype == torch.float32

    again, _ = build_tiny_model(family, seed=1)
    other, _ = build_tiny_model(family, seed=2)
    pairs = list(zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not torch.equal(model.lm_head.weight, other.lm_head.weight)

    code = "def insort(a, x, lo=0, hi=None):\n    return lo + hi\n"
    encoded = tokenizer(code, return_tensors="pt")
    assert encoded.input_ids[0, 0].item() == tokenizer.bos_token_id
    assert tokenizer.decode(encoded.input_ids[0], skip_special_tokens=True).startswith("def insort")
    # Code splits into merged tokens, not single bytes.
    assert encoded.input_ids.shape[1] < len(code) // 2
    output = model.generate(**encoded, max_new_tokens=4, do_sample=False)
    assert output.shape[1] == encoded.input_ids.shape[1] + 4


def test_unknown_family_is_rejected_with_choices():
    with pytest.raises(ValueError, match="llama, qwen2, gemma3"):
        build_tiny_model("mistral")
