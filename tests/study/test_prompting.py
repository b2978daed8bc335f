"""Model inputs built from benchmark rows: completion formats, the doc preamble, chat errors."""

import pytest

from apiedit_kedro.models.prompts import PromptFormatError, program_from_output
from apiedit_kedro.models.tiny import build_tiny_tokenizer
from apiedit_kedro.study.prompting import doc_preamble, generation_prompt, mbpp_shots


def test_humaneval_rows_are_continued_and_prepend_doc_only_adds_comments(mini_benchmark):
    row = mini_benchmark.iloc[0].to_dict()
    plain = generation_prompt(row, prompt_style="completion", tokenizer=None, shots=[])
    assert plain.text == row["prompt"] and plain.program_format == "humaneval"
    preamble = doc_preamble(
        [
            {
                "old_qualname": "math.sqrt",
                "new_qualname": "math.square_root_v2",
                "new_signature": "math.square_root_v2(x)",
                "doc": "Square root.",
            }
        ]
    )
    with_doc = generation_prompt(
        row, prompt_style="completion", tokenizer=None, shots=[], preamble=preamble
    )
    assert with_doc.text == preamble + row["prompt"]
    assert all(line.startswith("#") for line in preamble.strip().splitlines())
    # The program is the problem's prompt + completion, never the preamble.
    program = program_from_output(
        with_doc.program_format, with_doc.problem_prompt, "    return 1\n"
    )
    assert program == row["prompt"] + "    return 1\n"


def test_mbpp_rows_get_the_three_shot_prompt(mini_problems):
    shots = mbpp_shots(mini_problems).for_world([])
    assert [shot["problem_id"] for shot in shots] == ["MBPP/2", "MBPP/3", "MBPP/4"]
    row = {
        "problem_id": "MBPP/11",
        "prompt_format": "mbpp_3shot",
        "prompt": "You are an expert Python programmer, and here is your task: t "
        "Your code should pass these tests:\n\nassert g() == 2\n",
    }
    prompt = generation_prompt(row, prompt_style="completion", tokenizer=None, shots=shots)
    assert prompt.program_format == "mbpp"
    assert prompt.text.count("[DONE]") == 3
    assert prompt.text.endswith(row["prompt"] + "[BEGIN]\n")


def test_missing_shots_and_unknown_formats_are_named(mini_problems, mini_benchmark):
    with pytest.raises(ValueError, match="few-shot candidates"):
        mbpp_shots(mini_problems.iloc[:2])
    row = {**mini_benchmark.iloc[0].to_dict(), "prompt_format": "apps"}
    with pytest.raises(ValueError, match="unknown prompt_format 'apps'"):
        generation_prompt(row, prompt_style="completion", tokenizer=None, shots=[])
    with pytest.raises(PromptFormatError, match="chat template"):
        generation_prompt(
            mini_benchmark.iloc[0].to_dict(),
            prompt_style="chat",
            tokenizer=build_tiny_tokenizer(),
            shots=[],
        )


def test_a_shot_that_uses_a_removed_api_gives_way_to_the_next_clean_task(
    mini_problems, mini_mapping
):
    pool = mbpp_shots(mini_problems)
    sqrt_world = mini_mapping[mini_mapping["api_id"] == "math.sqrt"].to_dict("records")
    chosen = [shot["problem_id"] for shot in pool.for_world(sqrt_world)]
    # task 3 shows math.sqrt in its old form; task 1 is the first spare without it
    assert chosen == ["MBPP/2", "MBPP/4", "MBPP/1"]
    join_world = mini_mapping[mini_mapping["api_id"] == "os.path.join"].to_dict("records")
    assert [s["problem_id"] for s in pool.for_world(join_world)] == ["MBPP/2", "MBPP/3", "MBPP/4"]
