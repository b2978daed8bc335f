"""MBPP records: the entry point, the task-specific prompt block and the id ranges of the release.

The standard 3-shot prompt (MBPP paper) repeats one block per task: the task text,
"Your code should pass these tests:", a blank line and the three asserts. This module builds only the
block of the task itself; the shots around it are formatted by `apiedit_kedro.models.prompts`.
"""

import ast
import warnings
from collections.abc import Sequence

PROMPT_FORMAT = "mbpp_3shot"
FEW_SHOT_IDS = range(1, 11)
TEST_IDS = range(11, 511)


class MbppRecordError(ValueError):
    """An MBPP record lacks what the benchmark needs (code, three tests, a callable entry point)."""


def mbpp_split(task_id: int) -> str:
    """The upstream role of a task id: `prompt` (1–10), `test` (11–510) or `train` (511–974)."""
    if task_id in FEW_SHOT_IDS:
        return "prompt"
    return "test" if task_id in TEST_IDS else "train"


def task_prompt_block(text: str, tests: list[str]) -> str:
    """The task's own block of the standard MBPP prompt (without `[BEGIN]`)."""
    asserts = "\n".join(tests)
    return (
        f"You are an expert Python programmer, and here is your task: {text.strip()} "
        f"Your code should pass these tests:\n\n{asserts}\n"
    )


def few_shot_prompt(task_block: str, shots: Sequence[tuple[str, str]]) -> str:
    """The standard 3-shot prompt: each shot's block with its code between `[BEGIN]` and `[DONE]`,
    then the task's block and `[BEGIN]`; blocks are separated by one blank line.

    `shots` are (block, reference code) pairs; MBPP's `\\r\\n` line ends become `\\n`.
    """
    blocks = []
    for block, code in shots:
        unix_code = code.replace("\r\n", "\n").strip()
        blocks.append(f"{block}[BEGIN]\n{unix_code}\n[DONE]\n")
    return "\n".join([*blocks, f"{task_block}[BEGIN]\n"])


def entry_point(code: str, tests: list[str], *, task_id: int) -> str:
    """The function the tests call that the reference solution defines."""
    with warnings.catch_warnings():
        # some upstream solutions use invalid escapes like "\d" in plain strings
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        tree = ast.parse(code)
    defined = {
        node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }
    for test in tests:
        for node in ast.walk(ast.parse(test)):
            is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            if is_call and node.func.id in defined:
                return node.func.id
    raise MbppRecordError(
        f"MBPP/{task_id}: no test calls a function the reference code defines "
        f"(defined: {sorted(defined)}); fix the record or drop it from the JSONL file."
    )
