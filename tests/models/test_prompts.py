import pytest

from apiedit_kedro.models.prompts import (
    HUMANEVAL_STOP_SEQUENCES,
    PromptFormatError,
    chat_prompt,
    extract_code,
    humaneval_prompt,
    mbpp_prompt,
    program_from_output,
    prompt_format,
    stop_sequences_for,
)
from apiedit_kedro.models.tiny import build_tiny_tokenizer

SHOT = {
    "task_id": 2,
    "text": "Write a function to add.",
    "code": "def add(a, b):\r\n  return a + b",
    "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0", "assert add(-1, 1) == 0"],
}
TASK = {
    "task_id": 11,
    "text": "Write a function to negate.",
    "test_list": ["assert neg(1) == -1", "assert neg(0) == 0", "assert neg(-2) == 2"],
}
HEADER = "You are an expert Python programmer, and here is your task: "


def test_mbpp_prompt_is_the_documented_three_shot_template():
    prompt = mbpp_prompt(TASK, [SHOT, SHOT, SHOT])
    shot_block = (
        f"{HEADER}Write a function to add. Your code should pass these tests:\n\n"
        "assert add(1, 2) == 3\nassert add(0, 0) == 0\nassert add(-1, 1) == 0\n"
        "[BEGIN]\ndef add(a, b):\n  return a + b\n[DONE]\n"
    )
    task_block = (
        f"{HEADER}Write a function to negate. Your code should pass these tests:\n\n"
        "assert neg(1) == -1\nassert neg(0) == 0\nassert neg(-2) == 2\n[BEGIN]\n"
    )
    assert prompt == "\n".join([shot_block] * 3 + [task_block])
    assert stop_sequences_for("mbpp") == ("[DONE]",)
    with pytest.raises(PromptFormatError, match="MBPP task 11: missing field 'text'"):
        mbpp_prompt({**TASK, "text": ""}, [SHOT])


def test_program_is_what_the_sandbox_runs():
    prompt = humaneval_prompt({"task_id": "HumanEval/0", "prompt": "def f(x):\n"})
    assert program_from_output("humaneval", prompt, "    return x\n") == "def f(x):\n    return x\n"
    assert (
        program_from_output("mbpp", "ignored", "\ndef neg(x):\n  return -x\n")
        == "def neg(x):\n  return -x\n"
    )
    answer = "Sure!\n```python\ndef f(x):\n    return x\n```\nIt returns x."
    assert (
        program_from_output("chat", prompt, answer, entry_point="f") == "def f(x):\n    return x\n"
    )
    body_only = "```python\n    return x\n```"
    assert (
        program_from_output("chat", prompt, body_only, entry_point="f")
        == "def f(x):\n    return x\n"
    )


def test_extract_code_handles_missing_and_unclosed_fences():
    assert extract_code("x = 1\n") == "x = 1\n"
    assert extract_code("```py\ny = 2\n") == "y = 2\n"
    assert extract_code("a\n```\nz = 3\n```\n```python\nw = 4\n```") == "z = 3\n"


def test_stop_sequences_merge_format_and_card():
    stops = stop_sequences_for("humaneval", ["<|", "\ndef"])
    assert stops == (*HUMANEVAL_STOP_SEQUENCES, "<|")
    with pytest.raises(PromptFormatError, match="unknown prompt format 'fim'"):
        stop_sequences_for("fim")


def test_chat_prompt_uses_the_tokenizer_template():
    tokenizer = build_tiny_tokenizer()
    with pytest.raises(PromptFormatError, match="needs a tokenizer with a chat template"):
        chat_prompt(tokenizer, {"prompt": "def f(x):\n"}, source="humaneval")
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    )
    rendered = chat_prompt(tokenizer, {"prompt": "def f(x):\n"}, source="humaneval")
    assert rendered.startswith("<user>Complete the following Python function")
    assert "```python\ndef f(x):\n```" in rendered and rendered.endswith("<assistant>")
    rendered = chat_prompt(tokenizer, TASK, source="mbpp")
    assert "Write a function to negate." in rendered and "assert neg(-2) == 2" in rendered


def test_prompt_format_follows_card_style_and_source():
    assert prompt_format("completion", "humaneval") == "humaneval"
    assert prompt_format("completion", "mbpp") == "mbpp"
    assert prompt_format("chat", "mbpp") == "chat"
    with pytest.raises(PromptFormatError, match="unknown problem source 'apps'"):
        prompt_format("chat", "apps")
