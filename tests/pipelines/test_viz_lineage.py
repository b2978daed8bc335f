"""`kedro viz build` exports the lineage from the API catalogue to the final metrics."""

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from apiedit_kedro.study.regimes import STUDY_METHODS

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _reachable(edges: list[dict], start: str) -> set[str]:
    following = defaultdict(set)
    for edge in edges:
        following[edge["source"]].add(edge["target"])
    seen, frontier = {start}, [start]
    while frontier:
        for node in following[frontier.pop()]:
            if node not in seen:
                seen.add(node)
                frontier.append(node)
    return seen


@pytest.mark.slow
def test_viz_build_shows_layers_namespaces_and_lineage():
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    built = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    graph = json.loads((PROJECT_ROOT / "build" / "api" / "main").read_text())

    assert {"raw", "primary", "edit_requests", "model_output", "reporting"} <= set(graph["layers"])
    assert set(STUDY_METHODS) <= set(graph["modular_pipelines"])
    ids = {node["name"]: node["id"] for node in graph["nodes"]}
    downstream = _reachable(graph["edges"], ids["api_catalog"])
    for name in ("api_mapping", "benchmark", "edit_requests", "pass_at_k", "edit_metrics"):
        assert ids[name] in downstream, f"{name} is not downstream of api_catalog"
    datasets = [node for node in graph["nodes"] if node["type"] == "data"]
    assert all(node.get("layer") for node in datasets), [
        node["name"] for node in datasets if not node.get("layer")
    ]
