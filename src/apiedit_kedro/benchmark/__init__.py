"""The benchmark engine: items per (problem, API), their validation in every world that evaluates
them, the subsets, the edit requests and the synthesis report. No Kedro here; the `synthesis`
pipeline's nodes only wire these functions.
"""

from apiedit_kedro.benchmark.assembly import (
    REPORT_COLUMNS,
    SUBSETS,
    assemble,
    exclusion_rows,
    failure_rows,
    report_row,
    split_items,
    timeout_seconds,
)
from apiedit_kedro.benchmark.edit_requests import (
    EDIT_REQUEST_COLUMNS,
    build_edit_requests,
    call_context,
    choose_subjects,
    new_api_call_position,
)
from apiedit_kedro.benchmark.items import as_list, item_id, plan_items, program_for_world
from apiedit_kedro.benchmark.report import summarise
from apiedit_kedro.benchmark.settings import SynthesisSettings, SynthesisSettingsError
from apiedit_kedro.benchmark.validation import (
    instant_valid_items,
    sequential_order,
    validate_instant,
    validate_sequential,
    validated_steps,
)

__all__ = [
    "EDIT_REQUEST_COLUMNS",
    "REPORT_COLUMNS",
    "SUBSETS",
    "SynthesisSettings",
    "SynthesisSettingsError",
    "as_list",
    "assemble",
    "build_edit_requests",
    "call_context",
    "choose_subjects",
    "exclusion_rows",
    "failure_rows",
    "instant_valid_items",
    "item_id",
    "new_api_call_position",
    "plan_items",
    "program_for_world",
    "report_row",
    "sequential_order",
    "split_items",
    "summarise",
    "timeout_seconds",
    "validate_instant",
    "validate_sequential",
    "validated_steps",
]
