"""The Kedro project itself: settings load, every registered pipeline imports, hooks time nodes."""

import logging
import subprocess
import sys

from kedro.framework.project import pipelines, settings
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner

from apiedit_kedro.hooks import NodeTimingHooks


def test_project_bootstraps_and_registers_pipelines(project_root):
    bootstrap_project(project_root)
    assert settings.CONFIG_LOADER_ARGS["base_env"] == "base"
    registered = dict(pipelines)
    assert "__default__" in registered
    # `merge` only unions the shards of a `kedro fanout` run, so a one-machine run leaves it out.
    named = set(registered) - {"__default__", "merge"}
    assert not set(registered["merge"].nodes) & set(registered["__default__"].nodes)
    assert (
        registered["__default__"].nodes
        == sum((registered[name] for name in named), Pipeline([])).nodes
    )
    assert named == {"synthesis", "instant", "sequential", "evaluation", "adoption"}
    # The study ends by writing its report.
    default = registered["__default__"]
    assert "study_report" in default.outputs()
    [last] = [node for node in default.nodes if "study_report" in node.outputs]
    assert not set(last.outputs) & default.all_inputs()


def test_an_unknown_pipeline_names_the_registered_one_it_resembles(project_root):
    completed = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--pipeline=sequentail"],
        cwd=project_root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = " ".join((completed.stdout + completed.stderr).split())
    assert completed.returncode != 0
    assert "Failed to find the pipeline named 'sequentail'" in output
    assert "Did you mean one of these instead? sequential" in output
    assert "ImportError" not in output


def test_timing_hook_logs_each_node_duration(caplog):
    hooks = NodeTimingHooks()
    node = Node(lambda value: value + 1, inputs="x", outputs="y", name="increment")
    with caplog.at_level(logging.INFO, logger="apiedit_kedro.hooks"):
        hooks.before_node_run(node)
        hooks.after_node_run(node)
    assert any("node increment finished in" in message for message in caplog.messages)


def test_sequential_runner_runs_a_real_pipeline():
    catalog = DataCatalog({"x": MemoryDataset(1)})
    pipeline = Pipeline([Node(lambda value: value * 2, inputs="x", outputs="y", name="double")])
    outputs = SequentialRunner().run(pipeline, catalog)
    assert outputs["y"].load() == 2
