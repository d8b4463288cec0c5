"""The notebooks run top to bottom: executed for real in a Jupyter kernel of this environment
(not just parsed), with their outputs checked. They are committed without outputs."""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # multi-process, notebook or end-to-end runs: not in the fast lane

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _run(name: str, work: Path, monkeypatch) -> list[str]:
    """Execute ``notebooks/<name>.ipynb`` in notebooks/ and return each code cell's text output."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), \
        f"{name}.ipynb must be committed without outputs (clear them before committing)"
    monkeypatch.setenv("LONGRL_NOTEBOOK_DIR", str(work))
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    texts = []
    for cell in code:
        parts = []
        for out in cell.outputs:
            if out.output_type == "stream":
                parts.append(out.text)
            elif out.output_type in ("display_data", "execute_result"):
                parts.append(out.data.get("text/markdown", "") or out.data.get("text/plain", ""))
                if "image/png" in out.data:
                    parts.append("<image/png>")
        texts.append("".join(parts))
    return texts


def test_quickstart_notebook(tmp_path, monkeypatch):
    out = "\n".join(_run("quickstart", tmp_path, monkeypatch))
    assert "records per split" in out and "timestamps (s)" in out
    assert out.count("<image/png>") >= 5, "frames, the two curves and the frames of two completions"
    assert (tmp_path / "quickstart" / "rewards.png").is_file()
    assert re.search(r"\| tiny SFT \+ GRPO \| [\d.]+ \|", out), "the per-category table is missing"
    assert "model:" in out and "correct:" in out


def test_internals_notebook(tmp_path, monkeypatch):
    out = "\n".join(_run("long_video_rl_internals", tmp_path, monkeypatch))
    calls = [tuple(map(int, m)) for m in re.findall(r"\| \d+ \| (\d+) \| (\d+) \|", out)]
    assert len(calls) == 3 and all(on < off for on, off in calls), f"the cache must save encoder calls: {calls}"
    sp = re.findall(r"\| (\d) \| \[.*?\] \| \d+-\d+ \| ([\d.e+-]+) \| ([\d.e+-]+) \|", out)
    assert [r[0] for r in sp] == ["0", "1"] and "padding copy" in out
    assert all(float(e) == 0.0 and float(lp) <= 1e-5 for _, e, lp in sp)
    gaps = [float(g) for g in re.findall(r"max \|rollout - trainer\| log-prob = ([\d.e+-]+)", out)]
    assert len(gaps) == 2 and all(g <= 1e-5 for g in gaps), gaps
