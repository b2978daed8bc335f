"""Prompt formats and the mapping from a model's output to the program the sandbox executes.

Three formats:

- `humaneval` (completion models): the prompt is the HumanEval prompt, unstripped (bigcode's
  `humaneval-unstripped` convention; the trailing newline is kept). The model continues it;
  program = prompt + completion. Stops: bigcode's list (`\\nclass`, `\\ndef`, `\\n#`, `\\n@`,
  `\\nprint`, `\\nif`, a code fence, `<file_sep>`) plus the card's extra stops and EOS.
- `mbpp` (completion models): the MBPP paper's 3-shot prompt, as in the google-research MBPP
  README and lm-evaluation-harness. Exact template, for each of the shots and then the task::

      You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:
      <blank line>
      {test 1}
      {test 2}
      {test 3}
      [BEGIN]
      {code}          <- shots only
      [DONE]          <- shots only

  blocks are separated by one blank line and the prompt ends right after the task's
  `[BEGIN]\\n`. Generation stops at `[DONE]`; program = the completion (the extracted code).
- `chat` (instruct models): one user message holding the problem (the HumanEval prompt in a
  code fence, or the MBPP text and tests), rendered with the tokenizer's chat template. Program =
  the first fenced code block of the answer (the whole answer when there is no fence); for
  HumanEval the prompt is prepended when the block does not define the entry point itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from apiedit_kedro.problems import mbpp

HUMANEVAL_STOP_SEQUENCES = (
    "\nclass",
    "\ndef",
    "\n#",
    "\n@",
    "\nprint",
    "\nif",
    "```",
    "<file_sep>",
)
MBPP_STOP_SEQUENCES = ("[DONE]",)
MBPP_SHOT_IDS = (2, 3, 4)
FORMATS = ("humaneval", "mbpp", "chat")

_CHAT_INSTRUCTION = (
    "Complete the following Python function. Answer with the complete function in one "
    "```python code block.\n\n```python\n{prompt}```"
)
_CHAT_MBPP_INSTRUCTION = (
    "{text}\nYour code should pass these tests:\n{tests}\n"
    "Answer with the complete Python code in one ```python code block."
)
_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


class PromptFormatError(ValueError):
    """A problem record that a prompt format cannot use."""


def _tests_block(tests: Sequence[str]) -> str:
    return "\n".join(test.strip() for test in tests)


def _field(record: Mapping[str, Any], name: str, label: str) -> Any:
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value):
        raise PromptFormatError(f"{label}: missing field {name!r} needed to build the prompt")
    return value


def prompt_format(prompt_style: str, source: str) -> str:
    """The format for a card's prompt style and a problem source ("humaneval" or "mbpp")."""
    if source not in {"humaneval", "mbpp"}:
        raise PromptFormatError(f"unknown problem source {source!r}; use humaneval or mbpp")
    if prompt_style == "chat":
        return "chat"
    if prompt_style == "completion":
        return source
    raise PromptFormatError(f"unknown prompt_style {prompt_style!r}; use completion or chat")


def humaneval_prompt(record: Mapping[str, Any]) -> str:
    """The unstripped HumanEval prompt; the model continues it."""
    return str(_field(record, "prompt", str(record.get("task_id", "HumanEval record"))))


def mbpp_prompt(task: Mapping[str, Any], shots: Sequence[Mapping[str, Any]]) -> str:
    """The 3-shot MBPP prompt for `task`; `shots` are MBPP records (normally ids 2, 3, 4)."""

    def block(record: Mapping[str, Any], label: str) -> str:
        tests = [str(test).strip() for test in _field(record, "test_list", label)]
        return mbpp.task_prompt_block(str(_field(record, "text", label)), tests)

    shot_pairs = []
    for shot in shots:
        label = f"MBPP shot {shot.get('task_id', '?')}"
        shot_pairs.append((block(shot, label), str(_field(shot, "code", label))))
    return mbpp.few_shot_prompt(block(task, f"MBPP task {task.get('task_id', '?')}"), shot_pairs)


def chat_prompt(
    tokenizer: PreTrainedTokenizerBase, record: Mapping[str, Any], *, source: str
) -> str:
    """The chat-template rendering of one problem (`source` is "humaneval" or "mbpp")."""
    if tokenizer.chat_template is None:
        raise PromptFormatError(
            "prompt_style 'chat' needs a tokenizer with a chat template; this model has none "
            "(use prompt_style: completion in its card)"
        )
    if source == "humaneval":
        content = _CHAT_INSTRUCTION.format(prompt=humaneval_prompt(record))
    elif source == "mbpp":
        label = f"MBPP task {record.get('task_id', '?')}"
        content = _CHAT_MBPP_INSTRUCTION.format(
            text=_field(record, "text", label),
            tests=_tests_block(_field(record, "test_list", label)),
        )
    else:
        raise PromptFormatError(f"unknown problem source {source!r}; use humaneval or mbpp")
    messages = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def stop_sequences_for(prompt_format: str, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """Stop sequences of a format plus the card's own (e.g. `<|` for Qwen)."""
    base = {"humaneval": HUMANEVAL_STOP_SEQUENCES, "mbpp": MBPP_STOP_SEQUENCES, "chat": ()}
    if prompt_format not in base:
        raise PromptFormatError(f"unknown prompt format {prompt_format!r}; use one of {FORMATS}")
    return tuple(dict.fromkeys((*base[prompt_format], *extra)))


def extract_code(answer: str) -> str:
    """The first fenced code block of a chat answer, or the whole answer without fences."""
    match = _FENCE.search(answer)
    return match.group(1) if match else answer


def program_from_output(
    prompt_format: str, problem_prompt: str, output: str, *, entry_point: str = ""
) -> str:
    """The code the sandbox executes for a generated `output` (see the module docstring).

    `problem_prompt` is the problem's own prompt (the HumanEval prompt), never the rendered
    chat text; it is only used by `humaneval` and by `chat` answers that omit the signature.
    """
    if prompt_format == "humaneval":
        return problem_prompt + output
    if prompt_format == "mbpp":
        return output.strip("\n") + "\n"
    if prompt_format == "chat":
        code = extract_code(output)
        if entry_point and not re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.M):
            # The model only wrote the body: the prompt holds the signature and the docstring.
            return problem_prompt + code
        return code
    raise PromptFormatError(f"unknown prompt format {prompt_format!r}; use one of {FORMATS}")
