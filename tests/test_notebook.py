"""notebooks/explore_results.ipynb runs headless against a tiny study run, so it cannot silently rot."""

import nbformat
import pytest
from nbclient import NotebookClient
from tiny_study import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "explore_results.ipynb"


@pytest.mark.slow
def test_explore_results_notebook_runs_on_a_tiny_study(study_root):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    [index] = [
        i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
    ]
    # Parameters injected after the tagged cell, as papermill does.
    notebook.cells.insert(
        index + 1,
        nbformat.v4.new_code_cell(f'ENV = "tiny"\nDATA_ROOT = {str(study_root)!r}'),
    )
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(PROJECT_ROOT / "notebooks")}},
    ).execute()
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == 3  # the report's three plots
    assert not [output for output in outputs if output.get("output_type") == "error"]
    text = " ".join(str(output.get("data", {}).get("text/html", "")) for output in outputs)
    assert "too small to conclude anything" in text
    assert "new_api_reference" in text
