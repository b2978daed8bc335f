"""The text a model sees for a benchmark problem, and the preamble of the `prepend_doc` baseline.

Formats (the `prompt_format` column of `benchmark`):
- `humaneval_completion`: the model continues the HumanEval prompt (program = prompt + completion);
- `mbpp_3shot`: the MBPP paper's 3-shot prompt; `benchmark.prompt` holds the task's own block (program =
  the generated code). The shots are the paper's MBPP tasks 2, 3 and 4 unless one of them uses an
  API removed in the prompt's world (tasks 2-4 show `set`, `tuple`, `int`, `math.sqrt` and
  `heapq.nlargest` in their old form): then the next candidates that use none of the world's APIs
  take their place, in the order 1, 5, 6, 7, 8, 9, 10 (the rest of the few-shot split), then 610 and
  619. Task 6 and the two train-split tasks 610 and 619 use no catalogued API (once `range` is
  catalogued, no other task of the few-shot split does), so every world gets three shots; a prompt
  never shows a removed API. The whole candidate pool is excluded from the benchmark
  (`synthesis.excluded_mbpp_ids`), so no shot shows the solution of an evaluated problem.
Chat cards (`prompt_style: chat`) get the problem in the tokenizer's chat template instead.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from textwrap import wrap
from typing import Any

import pandas as pd

from apiedit_kedro.apis.mapping import parse_mappings
from apiedit_kedro.apis.references import (
    QualifiedReference,
    count_api_references,
    resolve_references,
)
from apiedit_kedro.models.prompts import chat_prompt
from apiedit_kedro.problems.mbpp import few_shot_prompt

MBPP_SHOT_PROBLEM_IDS = ("MBPP/2", "MBPP/3", "MBPP/4")
# the rest of MBPP's few-shot split (tasks 1-10), then two train-split tasks that use no catalogued
# API, in the order they replace a shot
MBPP_SPARE_SHOT_IDS = (
    "MBPP/1",
    "MBPP/5",
    "MBPP/6",
    "MBPP/7",
    "MBPP/8",
    "MBPP/9",
    "MBPP/10",
    "MBPP/610",
    "MBPP/619",
)
MBPP_SHOT_POOL = (*MBPP_SHOT_PROBLEM_IDS, *MBPP_SPARE_SHOT_IDS)
N_SHOTS = 3
PROGRAM_FORMATS = {"humaneval_completion": "humaneval", "mbpp_3shot": "mbpp"}


@dataclass(frozen=True)
class GenerationPrompt:
    text: str  # what the model is given
    program_format: str  # how its output becomes a program: humaneval | mbpp | chat
    problem_prompt: str  # the problem's own prompt (HumanEval programs start with it)


@dataclass(frozen=True)
class ShotPool:
    """The few-shot candidates in preference order, with the API references of their code."""

    shots: tuple[dict[str, Any], ...]
    references: tuple[tuple[QualifiedReference, ...], ...]

    def for_world(self, world_mappings: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The first `N_SHOTS` candidates that reference no API removed in the world."""
        mappings = parse_mappings(world_mappings) if world_mappings else []
        chosen = []
        for shot, references in zip(self.shots, self.references, strict=True):
            used = count_api_references(list(references), mappings).old if mappings else {}
            if not any(used.values()):
                chosen.append(shot)
            if len(chosen) == N_SHOTS:
                break
        return chosen


def mbpp_shots(problems: pd.DataFrame) -> ShotPool:
    """The MBPP few-shot candidates as a `ShotPool` (tasks 2, 3, 4 first)."""
    shots = problems[problems["problem_id"].isin(MBPP_SHOT_POOL)]
    if set(shots["problem_id"]) != set(MBPP_SHOT_POOL):
        raise ValueError(
            f"problems lacks MBPP's few-shot candidates {MBPP_SHOT_POOL}; re-run the synthesis "
            "pipeline with the full MBPP file"
        )
    order = {pid: i for i, pid in enumerate(MBPP_SHOT_POOL)}
    rows = sorted(shots.to_dict("records"), key=lambda row: order[row["problem_id"]])
    references = tuple(
        tuple(
            resolve_references(
                "\n".join([str(row["reference_solution"]), *[str(t) for t in row["tests"]]])
            )
        )
        for row in rows
    )
    return ShotPool(tuple(rows), references)


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
