"""The text a model sees for a benchmark problem, and the preamble of the `prepend_doc` baseline.

Formats (the `prompt_format` column of `benchmark`):
- `humaneval_completion`: the model continues the HumanEval prompt (program = prompt + completion);
- `mbpp_3shot`: the MBPP paper's 3-shot prompt; `benchmark.prompt` holds the task's own block and the
  shots are MBPP tasks 2, 3 and 4 from `problems` (program = the generated code).
Chat cards (`prompt_style: chat`) get the problem in the tokenizer's chat template instead.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from textwrap import wrap
from typing import Any

import pandas as pd

from apiedit_kedro.models.prompts import chat_prompt
from apiedit_kedro.problems.mbpp import few_shot_prompt

MBPP_SHOT_PROBLEM_IDS = ("MBPP/2", "MBPP/3", "MBPP/4")
PROGRAM_FORMATS = {"humaneval_completion": "humaneval", "mbpp_3shot": "mbpp"}


@dataclass(frozen=True)
class GenerationPrompt:
    text: str  # what the model is given
    program_format: str  # how its output becomes a program: humaneval | mbpp | chat
    problem_prompt: str  # the problem's own prompt (HumanEval programs start with it)


def mbpp_shots(problems: pd.DataFrame) -> list[dict[str, Any]]:
    """The three MBPP shot problems, as `problems` rows."""
    shots = problems[problems["problem_id"].isin(MBPP_SHOT_PROBLEM_IDS)]
    if len(shots) != len(MBPP_SHOT_PROBLEM_IDS):
        raise ValueError(
            f"problems lacks the MBPP shot tasks {MBPP_SHOT_PROBLEM_IDS}; re-run the synthesis "
            "pipeline with the full MBPP file"
        )
    order = {pid: i for i, pid in enumerate(MBPP_SHOT_PROBLEM_IDS)}
    return sorted(shots.to_dict("records"), key=lambda row: order[row["problem_id"]])


def generation_prompt(
    problem: Mapping[str, Any],
    *,
    prompt_style: str,
    tokenizer,
    shots: Sequence[Mapping[str, Any]],
    preamble: str = "",
) -> GenerationPrompt:
    """The model input for one benchmark row (optionally after the `prepend_doc` preamble)."""
    prompt_format = str(problem["prompt_format"])
    if prompt_format not in PROGRAM_FORMATS:
        raise ValueError(
            f"{problem['problem_id']}: unknown prompt_format {prompt_format!r}; "
            f"expected one of {sorted(PROGRAM_FORMATS)}"
        )
    problem_prompt = str(problem["prompt"])
    if prompt_style == "chat":
        source = "humaneval" if prompt_format == "humaneval_completion" else "mbpp"
        record = {"prompt": preamble + problem_prompt}
        if source == "mbpp":
            record = {"text": preamble + problem_prompt, "test_list": list(problem["tests"])}
        text = chat_prompt(tokenizer, record, source=source)
        return GenerationPrompt(text, "chat", problem_prompt)
    if prompt_format == "humaneval_completion":
        return GenerationPrompt(preamble + problem_prompt, "humaneval", problem_prompt)
    return GenerationPrompt(
        preamble
        + few_shot_prompt(
            problem_prompt, [(shot["prompt"], str(shot["reference_solution"])) for shot in shots]
        ),
        "mbpp",
        problem_prompt,
    )


def doc_preamble(mappings: Sequence[Mapping[str, Any]]) -> str:
    """Python comments announcing each API change with the new API's doc (`prepend_doc` baseline)."""
    lines = []
    for mapping in mappings:
        lines.append(
            f"# API change: `{mapping['old_qualname']}` was removed; use "
            f"`{mapping['new_qualname']}` instead. New usage: {mapping['new_signature']}"
        )
        lines.extend(f"#   {line}" for line in wrap(str(mapping["doc"]), 92))
    return "\n".join(lines) + "\n\n" if lines else ""
