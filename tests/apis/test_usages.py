"""The std-lib API usage detector on tricky imports."""

import pytest

from apiedit_kedro.apis.usages import detect_api_uses


def _apis(source: str, **kwargs) -> dict[str, tuple[int, int]]:
    return {u.api: (u.references, u.calls) for u in detect_api_uses(source, **kwargs)}


def test_import_forms_and_aliases_resolve_to_the_module_api():
    source = (
        "import math\nimport os.path as osp\nimport collections as c\n"
        "from heapq import heappush as push\nfrom re import *\n"
        "def f(xs, a, b):\n"
        "    push(xs, 1)\n"
        "    c.Counter(xs).most_common(1)\n"
        "    return math.sqrt(a), osp.join(a, b), search('x', b)\n"
    )
    apis = _apis(source)
    assert apis["math.sqrt"][1] == 1
    assert apis["os.path.join"][1] == 1
    assert apis["collections.Counter"][1] == 1
    assert apis["heapq.heappush"][1] == 1
    assert apis["re.search"][1] == 1


def test_attribute_chains_map_to_the_module_level_api():
    apis = _apis("import itertools\nitertools.chain.from_iterable([[1]])\n")
    # a call of `chain.from_iterable` references `itertools.chain` but is not a call of it
    assert apis == {"itertools.chain": (1, 0)}


def test_shadowed_names_and_non_stdlib_modules_are_not_apis():
    source = (
        "import numpy_like_module_that_is_absent as np\ndef f(math):\n    return math.sqrt(2)\n"
    )
    assert _apis(source) == {}


def test_builtins_are_out_of_the_default_scope():
    source = "def f(xs):\n    return sorted(zip(xs, xs))\n"
    assert _apis(source) == {}
    assert _apis(source, builtins_in_scope={"builtins.sorted"}) == {"builtins.sorted": (1, 1)}


def test_typing_annotations_are_not_apis():
    assert _apis("from typing import List\ndef f(x: List[int]) -> List[int]:\n    return x\n") == {}


def test_unparsable_source_raises_syntax_error():
    with pytest.raises(SyntaxError):
        detect_api_uses("def f(:\n")
