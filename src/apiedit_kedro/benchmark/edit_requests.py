"""Edit requests: one per reliability item, keyed on a subject that names its API.

- `prompt` is the item's expected solution (only its own API rewritten, so every other API shows
  in its old form, as in the instant world) up to the first call of the new API; trailing
  whitespace moves into `target_new`, so the prompt never ends in a lone whitespace token.
- `subject` is the shortest run of whole words ending the prompt that no other API's request
  could also have as a subject. For a module API called through its module this is the module or
  its alias with the dot (`re.`, `hq.`), extended to the left only where two APIs of one module
  would otherwise share it. A built-in call has nothing naming its API before the call, so its
  subject is the statement that leads to it, long enough to be unique. The subject ends the
  prompt, so the key stays the last prompt token (ROME's `subject_last`); only the subject's text
  changes, i.e. ROME's "{subject} is a" KL prompt and which earlier occurrences are read.
- `rephrase_prompts` are call contexts of *other* items of the same API (never suffixes of this
  one), each with its own call as `rephrase_targets`; `locality_prompts` come from specificity items that no edit concerns.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

import numpy as np
import pandas as pd

from apiedit_kedro.apis.mapping import ApiMapping
from apiedit_kedro.apis.rewrite import parse_quietly

EDIT_REQUEST_COLUMNS = [
    "edit_id",
    "api_id",
    "seq_order",
    "source_item_id",
    "source_problem_id",
    "prompt",
    "target_new",
    "subject",
    "rephrase_prompts",
    "rephrase_targets",
    "locality_prompts",
    "locality_problem_ids",
]


class EditRequestError(ValueError):
    """The benchmark and the API mapping disagree, so no request can be built."""


def new_api_call_position(source: str, new_name: str) -> tuple[int, int] | None:
    """(start of the new name, end of the call it leads) for the first call through `new_name`,
    else the span of its first reference as a value.

    The call may go through an attribute of the new API (`my_itertools_chain.from_iterable(x)`).
    """
    lines = source.splitlines(keepends=True)
    starts = np.cumsum([0, *(len(line) for line in lines)]).tolist()
    best = None
    tree = parse_quietly(source)
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        while isinstance(func, ast.Attribute) and func.attr != new_name:
            func = func.value
        if isinstance(func, ast.Name) and func.id == new_name:
            line, col = func.lineno, func.col_offset
        elif isinstance(func, ast.Attribute):
            line, col = func.end_lineno, func.end_col_offset - len(new_name)
        else:
            continue
        # HumanEval/MBPP sources are ASCII, so AST byte columns are character columns
        position = (starts[line - 1] + col, starts[call.end_lineno - 1] + call.end_col_offset)
        best = position if best is None or position < best else best
    if best is None:
        # an API with unchanged usage may only be passed as a value (`map(math.tan, xs)`)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id == new_name:
                position = (starts[node.lineno - 1] + node.col_offset, 0)
            elif isinstance(node, ast.Attribute) and node.attr == new_name:
                position = (starts[node.end_lineno - 1] + node.end_col_offset - len(new_name), 0)
            else:
                continue
            best = position if best is None or position < best else best
        best = (best[0], best[0] + len(new_name)) if best else None
    return best


def call_context(source: str, new_name: str) -> tuple[str, str] | None:
    """(prompt, target_new) at the first new-API call, the prompt free of trailing whitespace."""
    located = new_api_call_position(source, new_name)
    if located is None:
        return None
    start, end = located
    cut = len(source[:start].rstrip())
    return source[:cut], source[cut:end]


def subject_candidates(prompt: str) -> list[str]:
    """Suffixes of `prompt` made of whole words, shortest first (the last word, the last two, …)."""
    starts = [0] + [i + 1 for i, char in enumerate(prompt) if char.isspace()]
    starts = [s for s in starts if s < len(prompt) and not prompt[s].isspace()]
    return [prompt[s:] for s in reversed(starts)]


def choose_subjects(prompts_by_api: dict[str, list[str]]) -> dict[tuple[str, int], str | None]:
    """Per (api_id, request index) the shortest candidate that no other API could choose."""
    candidates = {
        (api_id, index): subject_candidates(prompt)
        for api_id, prompts in prompts_by_api.items()
        for index, prompt in enumerate(prompts)
    }
    owners: dict[str, set[str]] = {}
    for (api_id, _), texts in candidates.items():
        for text in texts:
            owners.setdefault(text, set()).add(api_id)
    return {
        key: next((text for text in texts if owners[text] == {key[0]}), None)
        for key, texts in candidates.items()
    }


def build_edit_requests(
    benchmark: pd.DataFrame,
    mappings: Sequence[ApiMapping],
    seq_order: dict[str, int],
    *,
    seed: int,
    n_locality_prompts: int,
    n_rephrase_prompts: int,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """All requests, sorted by (seq_order, item), and (item_id, reason) for items left without one."""
    by_id = {mapping.api_id: mapping for mapping in mappings}
    specificity = benchmark[benchmark["subset"] == "specificity"].sort_values("problem_id")
    edited = benchmark[benchmark["subset"] != "specificity"].sort_values(["api_id", "problem_id"])
    contexts: dict[str, list[tuple[str, str, str, str, str]]] = {}
    skipped = []
    for item in edited.itertuples(index=False):
        mapping = by_id[item.api_id]
        context = call_context(item.reference_new, mapping.new_name)
        if context is None:
            raise EditRequestError(
                f"item {item.item_id}: its expected solution never references {mapping.new_name}; "
                "the benchmark and api_mapping are inconsistent, re-run the synthesis pipeline"
            )
        contexts.setdefault(item.api_id, []).append(
            (item.item_id, item.problem_id, item.subset, *context)
        )
    reliability = {
        api_id: [c for c in entries if c[2] == "reliability"]
        for api_id, entries in contexts.items()
    }
    subjects = choose_subjects(
        {api_id: [c[3] for c in entries] for api_id, entries in reliability.items()}
    )
    rows = []
    for api_id, entries in sorted(reliability.items()):
        new_name = by_id[api_id].new_name
        for index, (source_item, problem_id, _, prompt, target) in enumerate(entries):
            subject = subjects[(api_id, index)]
            if subject is None:
                skipped.append(
                    (source_item, "no subject distinguishes its context from another API's")
                )
                continue
            rng = np.random.default_rng([seed, *source_item.encode()])
            others = [c for c in contexts[api_id] if c[0] != source_item and new_name not in c[3]]
            rephrase = [
                others[i] for i in sorted(rng.permutation(len(others))[:n_rephrase_prompts])
            ]
            n_locality = min(n_locality_prompts, len(specificity))
            picks = sorted(rng.choice(len(specificity), size=n_locality, replace=False).tolist())
            rows.append(
                {
                    "edit_id": f"edit:{source_item}",
                    "api_id": api_id,
                    "seq_order": int(seq_order[api_id]),
                    "source_item_id": source_item,
                    "source_problem_id": problem_id,
                    "prompt": prompt,
                    "target_new": target,
                    "subject": subject,
                    "rephrase_prompts": [c[3] for c in rephrase],
                    "rephrase_targets": [c[4] for c in rephrase],
                    "locality_prompts": [locality_prompt(specificity.iloc[i]) for i in picks],
                    "locality_problem_ids": [specificity.iloc[i]["problem_id"] for i in picks],
                }
            )
    requests = pd.DataFrame(rows, columns=EDIT_REQUEST_COLUMNS)
    return requests.sort_values(["seq_order", "source_item_id"], ignore_index=True), skipped


def locality_prompt(problem: pd.Series) -> str:
    """A specificity problem's reference up to its last line: code context that no edit concerns."""
    source = problem["reference_old"].rstrip()
    last_line = source.rfind("\n")
    return source[: last_line + 1].rstrip() if last_line > 0 else source
