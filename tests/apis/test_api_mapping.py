"""Mapping validation and usage adapters, on real std-lib functions (nothing is installed here)."""

import functools
import inspect
import json
import math
import operator
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apiedit_kedro.apis.mapping import (
    ApiMapping,
    MappingError,
    build_new_callable,
    parse_mappings,
)


def record(api_id, old, new, kind, impl, *, doc="The new API."):
    return {
        "api_id": api_id,
        "old_qualname": old,
        "new_qualname": new,
        "kind": kind,
        "old_signature": "",
        "new_signature": "",
        "doc": doc,
        "impl": json.dumps(impl),
    }


def adapter(old, new, kind, impl, counts=None):
    mapping = ApiMapping.from_record(record(old, old, new, kind, impl))
    return build_new_callable(mapping, mapping.old_object(), call_counts=counts)


def test_from_record_derives_locations():
    relocated = ApiMapping.from_record(
        record("join", "os.path.join", "my_os_path_join", "relocate", {"usage": "pack_varargs"})
    )
    assert (relocated.old_module, relocated.old_name) == ("os.path", "join")
    assert (relocated.new_module, relocated.new_name) == ("builtins", "my_os_path_join")
    assert relocated.usage == {"usage": "pack_varargs"}
    renamed = ApiMapping.from_record(
        record("sqrt", "math.sqrt", "math.square_root", "rename", {"usage": "same"})
    )
    assert (renamed.new_module, renamed.new_name) == ("math", "square_root")
    builtin = ApiMapping.from_record(
        record("sorted", "sorted", "my_builtin_sorted", "relocate", {"usage": "same"})
    )
    assert (builtin.old_module, builtin.old_name) == ("builtins", "sorted")
    assert ApiMapping.from_record(renamed.to_record()) == renamed


def test_records_from_pandas_and_parquet_are_accepted(tmp_path):
    rows = [
        record("comb", "math.comb", "math.choose", "rename", {"usage": "same"}),
        {**record("join", "os.path.join", "my_os_path_join", "relocate", {"usage": "same"})},
    ]
    rows[1]["doc"] = None
    frame = pd.DataFrame(rows)
    path = tmp_path / "api_mapping.parquet"
    pq.write_table(pa.Table.from_pandas(frame), path)
    from_parquet = pd.read_parquet(path)
    parsed = parse_mappings(from_parquet.to_dict("records"))
    assert [m.api_id for m in parsed] == ["comb", "join"]
    assert parsed[1].doc == ""
    series_row = ApiMapping.from_record(from_parquet.iloc[0])
    assert series_row.new_qualname == "math.choose"
    arrow_row = {k: pa.scalar(v) for k, v in rows[0].items()}
    assert ApiMapping.from_record(arrow_row).api_id == "comb"


def test_same_usage_keeps_behaviour_name_doc_and_signature():
    gcd = adapter("math.gcd", "greatest_divisor", "relocate", {"usage": "same"})
    assert gcd(12, 18) == 6
    assert gcd.__name__ == "greatest_divisor"
    assert gcd.__doc__ == "The new API."
    assert str(inspect.signature(gcd)) == str(inspect.signature(math.gcd))
    reduce_new = adapter("functools.reduce", "fold_left", "relocate", {"usage": "same"})
    assert reduce_new(operator.add, [1, 2, 3], 10) == 16


def test_reorder_swaps_leading_positionals_and_rejects_short_or_keyword_calls():
    push = adapter(
        "heapq.heappush", "heapq.push_heap", "rename", {"usage": "reorder", "order": [1, 0]}
    )
    heap = []
    push(3, heap)
    push(1, heap)
    assert heap == [1, 3]
    assert str(inspect.signature(push)) == "(item, heap, /)"
    with pytest.raises(TypeError, match=r"push_heap\(\) missing 1 required positional argument"):
        push(heap)
    with pytest.raises(TypeError, match="push_heap"):
        push(item=3, heap=heap)
    search = adapter("re.search", "my_re_search", "relocate", {"usage": "reorder", "order": [1, 0]})
    assert search("say hello", "h.l+").group() == "hell"
    assert search("HELLO", "hel", flags=2) is not None
    fold = adapter(
        "functools.reduce", "fold_right_args", "relocate", {"usage": "reorder", "order": [1, 0]}
    )
    assert fold([1, 2, 3], operator.mul) == 6
    assert fold([], operator.mul, 1) == 1
    with pytest.raises(TypeError, match=r"fold_right_args\(\) missing 1 required positional"):
        fold([1, 2])


def test_pack_varargs_takes_one_iterable():
    join = adapter("os.path.join", "my_os_path_join", "relocate", {"usage": "pack_varargs"})
    assert join(["a", "b", "c"]) == os.path.join("a", "b", "c")
    assert join(part for part in ("x", "y")) == "x/y"
    assert str(inspect.signature(join)) == "(items, /)"
    with pytest.raises(TypeError, match=r"my_os_path_join\(\) takes 1 positional argument but 2"):
        join("a", "b")
    with pytest.raises(TypeError, match="must be an iterable, not int"):
        join(3)
    with pytest.raises(TypeError, match="needs at least 1 item"):
        join([])
    largest = adapter("max", "largest_of", "relocate", {"usage": "pack_varargs", "name": "values"})
    assert largest([3, 9, 2]) == 9
    assert largest(["aa", "b"], key=len) == "aa"


def test_pack_varargs_in_iterable_form_hands_the_old_api_the_iterable_itself():
    # max(*[[1, 2]]) would be max([1, 2]) == 2; the iterable form gives max([[1, 2]]) == [1, 2].
    largest = adapter(
        "max", "largest_of", "relocate", {"usage": "pack_varargs", "iterable_form": True}
    )
    assert largest([[1, 2]]) == [1, 2]
    assert largest([5]) == 5
    assert largest([], default=0) == 0
    assert largest(x * x for x in (-3, 2)) == 9
    with pytest.raises(TypeError, match=r"largest_of\(\) takes 1 positional argument but 2"):
        largest(3, 4)
    with pytest.raises(TypeError, match="must be an iterable, not int"):
        largest(3)


def test_an_unsubclassable_class_with_a_usage_change_becomes_a_counting_function():
    counts: dict = {}
    new_range = adapter(
        "builtins.range",
        "my_range",
        "relocate",
        {
            "usage": "keyword_only",
            "names": ["start", "stop", "step"],
            "forms": [["stop"], ["start", "stop"]],
            "defaults": {"start": 0, "step": 1},
        },
        counts,
    )
    assert new_range(stop=3) == range(3)
    assert new_range(start=5, stop=0, step=-2) == range(5, 0, -2)
    assert str(inspect.signature(new_range)) == "(*, start=0, stop, step=1)"
    assert counts == {"builtins.range": 2}
    with pytest.raises(TypeError, match=r"my_range\(\) takes 0 positional arguments but 1"):
        new_range(3)
    with pytest.raises(TypeError):
        isinstance(range(3), new_range)
    assert adapter("builtins.bool", "my_truth", "relocate", {"usage": "same"}) is bool


def test_keyword_only_requires_keywords_with_new_names():
    choose = adapter(
        "math.comb", "math.choose", "rename", {"usage": "keyword_only", "names": ["n", "k"]}
    )
    assert choose(n=5, k=2) == 10
    assert str(inspect.signature(choose)) == "(*, n, k)"
    with pytest.raises(
        TypeError, match=r"choose\(\) takes 0 positional arguments but 2 were given"
    ):
        choose(5, 2)
    with pytest.raises(
        TypeError, match=r"choose\(\) missing 1 required keyword-only argument: 'k'"
    ):
        choose(n=5)
    names = ["pattern", "replacement", "text"]
    substitute = adapter(
        "re.sub", "re.substitute", "rename", {"usage": "keyword_only", "names": names}
    )
    assert substitute(pattern="a", replacement="b", text="aaa", count=2) == "bba"
    with pytest.raises(TypeError, match="substitute"):
        substitute("a", "b", "aaa")


def test_rename_keywords_rejects_the_old_keyword():
    sort = adapter(
        "sorted", "my_sorted", "relocate", {"usage": "rename_keywords", "map": {"key": "sort_key"}}
    )
    assert sort(["bb", "a", "ccc"], sort_key=len) == ["a", "bb", "ccc"]
    assert sort([3, 1, 2], reverse=True) == [3, 2, 1]
    with pytest.raises(TypeError, match=r"my_sorted\(\) got an unexpected keyword argument 'key'"):
        sort([1], key=len)
    dumps = adapter(
        "json.dumps",
        "json.encode",
        "rename",
        {"usage": "rename_keywords", "map": {"indent": "spaces"}},
    )
    assert dumps({"a": 1}, spaces=2) == json.dumps({"a": 1}, indent=2)
    assert "spaces=None" in str(inspect.signature(dumps))
    with pytest.raises(TypeError, match=r"encode\(\) got an unexpected keyword argument 'indent'"):
        dumps({}, indent=2)  # json.dumps has **kw, which must not swallow the old keyword
    smallest = adapter(
        "min", "smallest", "relocate", {"usage": "rename_keywords", "map": {"key": "by"}}
    )
    assert smallest(["aaa", "b"], by=len) == "b"
    with pytest.raises(TypeError, match=r"smallest\(\) got an unexpected keyword argument 'key'"):
        smallest(["a"], key=len)


def test_call_counts_count_every_call_and_class_instantiation():
    counts = {}
    choose = adapter("math.comb", "math.choose", "rename", {"usage": "same"}, counts)
    tally = adapter("collections.Counter", "collections.Tally", "rename", {"usage": "same"}, counts)
    assert counts == {"math.comb": 0, "collections.Counter": 0}
    choose(4, 2)
    with pytest.raises(ValueError):
        choose(-1, 2)  # accepted by the signature, rejected by math.comb: still a call
    with pytest.raises(TypeError):
        choose()  # rejected by the signature before the body runs: not a call
    instance = tally("abca")
    assert counts == {"math.comb": 2, "collections.Counter": 1}
    assert isinstance(instance, tally)
    assert tally.__name__ == "Tally"
    assert tally.__doc__ == "The new API."
    assert instance.most_common(1) == [("a", 2)]
    assert (instance + tally("a"))["a"] == 3


def test_builtin_class_targets_keep_their_call_forms():
    counts = {}
    new_type = adapter("builtins.type", "my_type", "relocate", {"usage": "same"}, counts)
    assert new_type(5) is int  # the one-argument form
    made = new_type("Made", (), {"x": 1})
    assert made.x == 1
    assert isinstance(made, new_type)
    new_int = adapter("builtins.int", "my_int", "relocate", {"usage": "same"}, counts)
    assert new_int("12") + 1 == 13
    assert isinstance(new_int("3"), int)
    assert counts == {"builtins.type": 2, "builtins.int": 2}


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (record("x1", "mathx.comb", "mathx.c", "rename", {"usage": "same"}), "names no importable"),
        (
            record("x2", "math.combo", "math.c", "rename", {"usage": "same"}),
            "has no attribute 'combo'",
        ),
        (
            record("x3", "str.split", "my_split", "relocate", {"usage": "same"}),
            "builtin type 'str'",
        ),
        (
            record("x4", "collections.Counter.most_common", "mc", "relocate", {"usage": "same"}),
            "method of class 'Counter'",
        ),
        (record("x5", "math.sqrt", "math.floor", "rename", {"usage": "same"}), "already exists"),
        (
            record("x6", "math.sqrt", "len", "relocate", {"usage": "same"}),
            "already exists in builtins",
        ),
        (
            record("x7", "math.sqrt", "cmath.root", "rename", {"usage": "same"}),
            "use kind 'relocate'",
        ),
        (record("x8", "math.sqrt", "m.root", "relocate", {"usage": "same"}), "bare name"),
        (
            {**record("x9", "math.sqrt", "r9", "relocate", {}), "impl": "{not json"},
            "not valid JSON",
        ),
        (
            record("x10", "math.sqrt", "r10", "relocate", {"usage": "flip"}),
            "usage 'flip' is unknown",
        ),
        (
            record("x11", "math.pow", "r11", "relocate", {"usage": "reorder", "order": [0, 1]}),
            "non-identity",
        ),
        (
            record("x12", "math.sqrt", "r12", "relocate", {"usage": "reorder", "order": [1, 0]}),
            "leading positional",
        ),
        (record("x13", "math.sqrt", "r13", "relocate", {"usage": "pack_varargs"}), "taking *args"),
        (
            record("x14", "math.sqrt", "r14", "relocate", {"usage": "keyword_only", "names": "x"}),
            "non-empty list",
        ),
        (
            record(
                "x15",
                "sorted",
                "r15",
                "relocate",
                {"usage": "rename_keywords", "map": {"cmp": "c"}},
            ),
            "no keyword 'cmp'",
        ),
        (
            record("x16", "collections.Counter", "Tally16", "relocate", {"usage": "pack_varargs"}),
            "only supports usage 'same'",
        ),
        (
            record("x17", "math.pi", "pi_17", "relocate", {"usage": "pack_varargs"}),
            "is a constant, so its new name can only alias it",
        ),
        (
            record("x18", "sys.path", "my_path", "relocate", {"usage": "same"}),
            "neither callable nor a constant",
        ),
        (record("x19", "math.sqrt", "r19", "move", {"usage": "same"}), "kind 'move' is unknown"),
        (
            record("x20", "math.sqrt", "r20", "relocate", {"usage": "same", "order": [1]}),
            "not understood",
        ),
        (
            {
                k: v
                for k, v in record("x21", "math.sqrt", "r21", "relocate", {"usage": "same"}).items()
                if k != "impl"
            },
            "'impl' is missing",
        ),
        (record("x22", "os.path", "my_path", "relocate", {"usage": "same"}), "is a module"),
    ],
)
def test_bad_mappings_raise_mapping_error_naming_the_api(bad, fragment):
    with pytest.raises(MappingError) as error:
        parse_mappings([bad])
    assert repr(bad["api_id"]) in str(error.value)
    assert fragment in str(error.value)


def test_the_set_of_mappings_must_be_consistent():
    first = record("a", "math.comb", "math.choose", "rename", {"usage": "same"})
    with pytest.raises(MappingError, match=r"'a'.*also used by api_id 'a'"):
        parse_mappings([first, first])
    same_old = record("b", "math.comb", "math.choose2", "rename", {"usage": "same"})
    with pytest.raises(MappingError, match="map each old API once"):
        parse_mappings([first, same_old])
    same_new = record("c", "math.perm", "math.choose", "rename", {"usage": "same"})
    with pytest.raises(MappingError, match="own name"):
        parse_mappings([first, same_new])


def test_validation_leaves_the_process_pristine():
    parse_mappings([record("comb", "math.comb", "math.choose", "rename", {"usage": "same"})])
    assert math.comb(4, 2) == 6
    assert not hasattr(math, "choose")
    assert functools.reduce(operator.add, [1, 2]) == 3


def test_a_relocated_abc_class_answers_isinstance_without_recursing():
    """ABC checks ask every subclass of an ABC-based class, the relocated one included: that must
    not loop back into the old class (it did, as a RecursionError in `Counter(...)`)."""
    import collections
    import collections.abc

    from apiedit_kedro.apis.mapping import build_new_callable

    mapping = ApiMapping.from_record(
        record("cm", "collections.ChainMap", "my_chain_map", "relocate", {"usage": "same"})
    )
    relocated = build_new_callable(mapping, collections.ChainMap)
    assert not issubclass(list, collections.abc.Mapping)
    assert collections.Counter([1, 1])[1] == 2
    assert isinstance(collections.ChainMap(), relocated) and not isinstance({}, relocated)
    assert isinstance(relocated(), collections.abc.MutableMapping)
