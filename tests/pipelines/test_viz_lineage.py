"""`kedro viz build` exports the lineage from the API catalogue to the study report, and the built
app renders it in a real browser (Debian's Chromium, driven by playwright over 127.0.0.1)."""

import base64
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
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
    for name in (
        "api_mapping",
        "benchmark",
        "edit_requests",
        "pass_at_k",
        "edit_metrics",
        "adoption_summary",
        "study_report",
    ):
        assert ids[name] in downstream, f"{name} is not downstream of api_catalog"
    datasets = [node for node in graph["nodes"] if node["type"] == "data"]
    assert all(node.get("layer") for node in datasets), [
        node["name"] for node in datasets if not node.get("layer")
    ]


def _viz_project(study_root: Path, destination: Path) -> Path:
    """A copy of the project whose `data` is the tiny study's data root (so previews exist).

    `kedro viz build` takes neither an environment flag nor runtime parameters: the copy's
    `data` link and KEDRO_ENV=tiny point it at the tiny run without touching this checkout.
    """
    destination.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", destination)
    shutil.copytree(PROJECT_ROOT / "conf", destination / "conf")
    shutil.copytree(
        PROJECT_ROOT / "src" / "apiedit_kedro",
        destination / "src" / "apiedit_kedro",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (destination / "data").symlink_to(study_root, target_is_directory=True)
    return destination


def _serve(directory: Path) -> http.server.ThreadingHTTPServer:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:  # the test output is not an access log
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _rendered_path_exists(edges: list[str], start: str, goal: str) -> bool:
    return goal in _reachable(
        [dict(zip(("source", "target"), edge.split("|"), strict=True)) for edge in edges], start
    )


@pytest.mark.slow
def test_lineage_renders_in_chromium_and_a_plot_node_opens_its_plot(study_root, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it as root)")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")

    project = _viz_project(study_root, tmp_path / "project")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "KEDRO_ENV": "tiny"}
    built = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build", "--include-previews"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    plot_file = study_root / "08_reporting" / "tiny" / "all" / "adoption_plot.png"
    screenshots = Path(os.environ.get("LINEAGE_SCREENSHOT_DIR", tmp_path))

    server = _serve(project / "build")
    try:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"http://127.0.0.1:{server.server_port}/")
            page.wait_for_selector(".pipeline-node", timeout=60_000)
            names = dict(
                page.eval_on_selector_all(
                    ".pipeline-node",
                    "els => els.map(e => [e.dataset.nodeFullname, e.dataset.id])",
                )
            )
            edges = page.eval_on_selector_all(".pipeline-edge", "els => els.map(e => e.dataset.id)")
            for name in ("api_catalog", "benchmark", "execution_results", "study_report"):
                assert name in names, f"{name} is not drawn in the flowchart"
            assert _rendered_path_exists(edges, names["api_catalog"], names["study_report"])
            assert not _rendered_path_exists(edges, names["study_report"], names["api_catalog"])
            page.screenshot(path=str(screenshots / "lineage.png"))

            page.locator('.pipeline-node[data-node-fullname="adoption_plot"]').click()
            preview = page.wait_for_selector(".pipeline-metadata__plot-image", timeout=30_000)
            source = preview.get_attribute("src")
            assert source.startswith("data:image/png;base64,")
            assert base64.b64decode(source.split(",", 1)[1]) == plot_file.read_bytes()
            page.click("text=Expand preview")
            expanded = page.wait_for_selector(
                ".pipeline-metadata__plot-image--expanded", timeout=30_000
            )
            assert expanded.is_visible()
            page.screenshot(path=str(screenshots / "lineage_plot.png"))
            browser.close()
    finally:
        server.shutdown()
