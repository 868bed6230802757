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
                         timeout=1800)  # as the demo's test: ~3 min on 2 idle cores, far more on a busy machine
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


def test_ofa_checkpoint_snippet_runs(tmp_path, monkeypatch):
    """The converter snippet, on a checkpoint saved under the published name by the reference OFA
    implementation (random weights; the published file is a download)."""
    import torch

    from conftest import require_or_skip
    from ofa_stubs import import_ofa_mbv3, ofa_available

    require_or_skip(ofa_available(), "the reference OFA package is not installed (pip install --no-deps ofa)")
    (snippet,) = [b for b in python_blocks() if "load_ofa_checkpoint" in b]
    name = re.search(r'load_ofa_checkpoint\("([^"]+)"', snippet).group(1)
    torch.manual_seed(0)
    ofa = import_ofa_mbv3()(n_classes=1000, width_mult=1.2, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                            depth_list=[2, 3, 4])
    torch.save({"state_dict": ofa.state_dict()}, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    from edgenas.supernet.convert import convert_ofa_state_dict

    assert scope["supernet"].space.name == "mbv3-w1.2"
    loaded = scope["supernet"].state_dict()
    for key, tensor in convert_ofa_state_dict(ofa.state_dict(), "mbv3-w1.2").items():
        assert torch.equal(loaded[key], tensor), key


def test_plug_in_metric_snippet_runs():
    """The plug-in snippet with `space`, `table` and `my_model` supplied: OFA's Note10 tables
    shipped in latency_tables/ofa-note10 and a model that scores an arch string."""
    from edgenas.latency import LatencyTable

    (snippet,) = [b for b in python_blocks("Plugging in your own predictor or metric")]

    class MyModel:  # prefers deeper, wider subnets: any deterministic scorer of arch strings
        def predict(self, archs):
            return [float(a.count("e6") + a.count("k7")) for a in archs]

    scope = {"space": LatencyTable.load(ROOT / "latency_tables" / "ofa-note10").space(),
             "table": LatencyTable.load(ROOT / "latency_tables" / "ofa-note10"), "my_model": MyModel()}
    exec(compile(snippet, "README.md", "exec"), scope)
    best = scope["result"].best
    assert best["arch"].startswith("r") and min(best["latency_ms"].values()) <= 25.0
