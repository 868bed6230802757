"""The README's Python snippets run as written: the "Python API" section's whole path (train,
predictor, profile, search, export, measure) in a fresh working directory, and the shorter ones."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def python_blocks(section: str | None = None) -> list[str]:
    """The ```python blocks of README.md, or of the `## section` only."""
    text = README
    if section is not None:
        parts = re.split(r"^## ", README, flags=re.M)
        matches = [p for p in parts if p.startswith(section + "\n")]
        assert len(matches) == 1, f"README has {len(matches)} sections '## {section}'"
        text = matches[0]
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.M | re.S)


def test_python_api_section_has_one_snippet_of_at_most_15_lines():
    (snippet,) = python_blocks("Python API")
    assert len(snippet.strip().splitlines()) <= 15


@pytest.mark.slow
def test_python_api_snippet_runs_the_whole_path(tmp_path):
    (snippet,) = python_blocks("Python API")
    (tmp_path / "snippet.py").write_text(snippet)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    # Every step wrote its file where the snippet said, and the measurement is in the model card.
    dirs = sorted({m for m in re.findall(r'"(runs/[\w/.-]+)"', snippet)})
    assert dirs, "the snippet names no output under runs/"
    for d in dirs:
        assert (tmp_path / d).exists(), d
    run_dir = tmp_path / dirs[0].split("/")[0] / dirs[0].split("/")[1]
    assert (run_dir / "supernet.pt").is_file()
    card = json.loads((run_dir / "export" / "model.json").read_text())
    assert card["files"]["onnx"]["valid"] is True
    (measured,) = card["latency"]["measured"]
    assert measured["median_ms"] > 0 and measured["budget_ms"] > 0 and measured["predicted_ms"] > 0
    assert "measured" in run.stdout and "budget" in run.stdout


def test_arch_snippet_runs():
    (snippet,) = [b for b in python_blocks("Search spaces") if "materialize" in b]
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert str(scope["arch"]).startswith("r") and scope["subnet"].resolution == scope["arch"].resolution
