"""A hand-made miniature benchmark (two APIs, a few problems) for the regime and evaluation tests."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from apiedit_kedro.study.prompting import MBPP_SHOT_POOL

PROJECT_ROOT = Path(__file__).resolve().parents[2]

SQRT_PROGRAM = "import math\n\ndef root(x):\n    return math.sqrt(x)\n"
JOIN_PROGRAM = "import os\n\ndef join(a, b):\n    return os.path.join(a, b)\n"


# seq_order: os.path.join first, then math.sqrt; an item is validated in the sequential worlds
# from its own API's step on
SEQUENTIAL_STEPS = {"os.path.join": [1, 2], "math.sqrt": [2], None: []}


def _problem(problem_id, subset, api_id, prompt, reference_old, reference_new, tests, entry):
    return {
        "item_id": f"{problem_id}@{api_id}" if api_id else problem_id,
        "problem_id": problem_id,
        "source": "humaneval",
        "subset": subset,
        "api_id": api_id,
        "world_api_ids": [api_id] if api_id else [],
        "usage_kind": "",
        "usage_enforced": False,
        "sequential_steps": SEQUENTIAL_STEPS[api_id],
        "prompt": prompt,
        "prompt_format": "humaneval_completion",
        "reference_old": reference_old,
        "reference_new": reference_new,
        "tests": tests,
        "test_setup": "",
        "entry_point": entry,
        "timeout_s": 5.0,
    }


@pytest.fixture
def mini_benchmark() -> pd.DataFrame:
    sqrt_prompt = 'import math\n\ndef root(x):\n    """Square root of x."""\n'
    join_prompt = 'import os\n\ndef join(a, b):\n    """Join two path parts."""\n'
    rows = [
        _problem(
            "T/1",
            "reliability",
            "math.sqrt",
            sqrt_prompt,
            sqrt_prompt + "    return math.sqrt(x)\n",
            sqrt_prompt + "    return math.square_root_v2(x)\n",
            ["assert root(4) == 2"],
            "root",
        ),
        _problem(
            "T/2",
            "generalization",
            "math.sqrt",
            sqrt_prompt.replace("root", "half_root"),
            "",
            "",
            ["assert half_root(16) == 4"],
            "half_root",
        ),
        _problem(
            "T/3",
            "reliability",
            "os.path.join",
            join_prompt,
            join_prompt + "    return os.path.join(a, b)\n",
            join_prompt + "    return my_os_path_join([a, b])\n",
            ["assert join('a', 'b') == 'a/b'"],
            "join",
        ),
        _problem(
            "T/4",
            "specificity",
            None,
            'def add(a, b):\n    """Sum."""\n',
            "",
            "",
            ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
            "add",
        ),
    ]
    return pd.DataFrame(rows)


@pytest.fixture
def mini_mapping() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "api_id": "math.sqrt",
                "old_qualname": "math.sqrt",
                "new_qualname": "math.square_root_v2",
                "kind": "rename",
                "old_signature": "math.sqrt(x)",
                "new_signature": "math.square_root_v2(x)",
                "doc": "Return the square root of x.",
                "impl": json.dumps({"usage": "same"}),
                "seq_order": 1,
            },
            {
                "api_id": "os.path.join",
                "old_qualname": "os.path.join",
                "new_qualname": "my_os_path_join",
                "kind": "relocate",
                "old_signature": "os.path.join(a, *p)",
                "new_signature": "my_os_path_join(parts)",
                "doc": "Join path parts given as one list.",
                "impl": json.dumps({"usage": "pack_varargs"}),
                "seq_order": 0,
            },
        ]
    )


@pytest.fixture
def mini_requests() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "edit_id": "edit:T/1@math.sqrt",
                "api_id": "math.sqrt",
                "source_item_id": "T/1@math.sqrt",
                "seq_order": 1,
                "prompt": "import math\n\ndef root(x):\n    return",
                "target_new": " math.square_root_v2(x)",
                "subject": "x):\n    return",
                "rephrase_prompts": ["import math\n\ndef r(v):\n    return"],
                "rephrase_targets": [" math.square_root_v2(v)"],
                "locality_prompts": ["def add(a, b):\n    return"],
            },
            {
                "edit_id": "edit:T/3@os.path.join",
                "api_id": "os.path.join",
                "source_item_id": "T/3@os.path.join",
                "seq_order": 0,
                "prompt": "import os\n\ndef join(a, b):\n    return",
                "target_new": " my_os_path_join([a, b])",
                "subject": "b):\n    return",
                "rephrase_prompts": ["import os\n\ndef j(x, y):\n    return"],
                "rephrase_targets": [" my_os_path_join([x, y])"],
                "locality_prompts": ["def add(a, b):\n    return"],
            },
        ]
    )


@pytest.fixture
def mini_problems() -> pd.DataFrame:
    """MBPP's few-shot candidates in miniature; task 3 uses math.sqrt as the real one does."""
    shots = [
        {
            "problem_id": problem_id,
            "prompt": f"You are an expert Python programmer, and here is your task: task {i} "
            "Your code should pass these tests:\n\nassert f() == 1\n",
            "reference_solution": SQRT_PROGRAM if i == 3 else f"def f():\n    return {i}\n",
            "tests": ["assert f() == 1"],
        }
        for problem_id in MBPP_SHOT_POOL
        for i in [int(problem_id.removeprefix("MBPP/"))]
    ]
    return pd.DataFrame(shots)


@pytest.fixture(scope="session")
def tiny_params() -> dict:
    params = {}
    for name in ("parameters_model.yml", "parameters_editing.yml"):
        params.update(yaml.safe_load((PROJECT_ROOT / "conf" / "tiny" / name).read_text()))
    return params
