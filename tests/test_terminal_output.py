"""What a user sees: progress in logs without carriage returns, no paramiko chatter unless -v, and
plot titles inside their figure."""
from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
LONG = "a-search-space-with-a-rather-long-descriptive-name-for-the-raspberry-pi-4-at-1.5-ghz"


# ---- progress ------------------------------------------------------------------------------------

def test_progress_off_a_terminal_is_whole_lines_every_tenth_and_at_the_end():
    from edgenas.progress import LineProgress, progress_bar

    out = io.StringIO()  # not a terminal
    with progress_bar(95, "ops dev", "op", file=out) as bar:
        assert isinstance(bar, LineProgress)
        for _ in range(95):
            bar.set_postfix_str("measuring")
            bar.update(1)
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    assert 9 <= len(lines) <= 11, lines
    assert lines[-1].startswith("ops dev: 95/95 op (100%)") and "measuring" in lines[-1]


def test_progress_closed_early_says_where_it_stopped():
    from edgenas.progress import progress_bar

    out = io.StringIO()
    bar = progress_bar(1000, "train", "step", file=out, initial=500)
    bar.update(3)
    bar.close()
    assert out.getvalue().splitlines() == [out.getvalue().splitlines()[-1]]
    assert out.getvalue().startswith("train: 503/1000 step (50%)")


def test_profile_progress_in_a_log_has_no_carriage_returns(tmp_path):
    """The real profiler, stderr to a file: progress shows as lines."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    proc = subprocess.run([sys.executable, "-m", "edgenas", "profile", "local-cpu", "--space", "mbv3-tiny",
                           "--resolutions", "24", "--runs", "2", "--warmup", "0", "--calibrate", "0",
                           "--out", str(tmp_path / "t.yaml")], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\r" not in proc.stderr
    assert any("ops:" in line and "(100%)" in line for line in proc.stderr.splitlines()), proc.stderr[-2000:]


# ---- paramiko ------------------------------------------------------------------------------------

PARAMIKO = """
import logging, sys
from edgenas.cli import _setup_logging
_setup_logging(int(sys.argv[1]), False)
logging.getLogger("paramiko.transport").info("Connected (version 2.0, client OpenSSH_9.2)")
logging.getLogger("paramiko.transport").warning("a paramiko warning")
logging.getLogger("edgenas.profile").info("edgenas info line")
"""


@pytest.mark.parametrize("verbose", [0, 1])
def test_paramiko_info_only_with_verbose(verbose):
    proc = subprocess.run([sys.executable, "-c", PARAMIKO, str(verbose)], capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert "edgenas info line" in proc.stderr and "a paramiko warning" in proc.stderr
    assert ("Connected (version 2.0" in proc.stderr) == bool(verbose)


# ---- plot titles ---------------------------------------------------------------------------------

@pytest.fixture
def saved_figures(monkeypatch):
    """Every matplotlib figure edgenas saves during the test, with its layout as saved."""
    from matplotlib.figure import Figure

    from edgenas.plotting import outside

    saved, original = [], Figure.savefig

    def savefig(self, *args, **kwargs):
        saved.append((self, [t.get_text() for t in outside(self)]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return saved


def test_fit_title_wraps_and_shrinks_into_the_figure():
    from matplotlib.figure import Figure

    from edgenas.plotting import fit_title, outside

    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.set_title(LONG * 2)
    fig.tight_layout()
    assert outside(fig)  # the plain title runs off the figure: the check can fail
    title = fit_title(ax, LONG * 2)
    assert not outside(fig) and "\n" in title.get_text()


def test_search_plot_title_fits(tmp_path, saved_figures):
    from edgenas.search import Constraint, Metric, cost_metric, search
    from edgenas.space import load_space

    space = dataclasses.replace(load_space("mbv3-tiny"), name=LONG)
    acc = Metric("accuracy", lambda b: 50 + np.log(b.costs()["macs"]), goal="max", unit="%")
    result = search(space, acc, [Constraint(cost_metric("mflops"), 5.0)], "evolution", population=8,
                    generations=2, report=[cost_metric("mflops")])
    result.plot(tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0
    assert len(saved_figures) == 1 and saved_figures[0][1] == []


def test_validation_plot_title_fits(tmp_path, saved_figures):
    from edgenas.latency.validate import ValidationReport, plot_validation

    rng = np.random.default_rng(0)
    measured = rng.uniform(1, 5, 20)
    report = ValidationReport(archs=[None] * 20, predicted=measured * rng.uniform(0.9, 1.1, 20), measured=measured,
                              drift=1.04, drift_subnets=3)
    plot_validation(report, tmp_path / "v.png", title=f"{LONG}-mbv3-w1.0")
    assert len(saved_figures) == 1 and saved_figures[0][1] == []


def test_training_plot_phase_names_fit_their_spans(tmp_path, saved_figures):
    """A real training run whose phases have long names: every label lies inside the figure and
    none overlaps its neighbour."""
    from edgenas.cli import main

    long = "a-long-phase-name-that-a-user-chose-to-describe-what-it-trains-at-full-size-and-at-every-kernel-"[:95]
    phases = ("[{name: %s1, epochs: 1, lr: 0.05, kernel_sizes: max, expand_ratios: max, depths: max}, "
              "{name: %s2, epochs: 1, lr: 0.02, expand_ratios: max, depths: max}]" % (long, long))
    assert main(["train", str(REPO / "configs" / "digits-tiny.yaml"), "--out", str(tmp_path / "run"), "--no-progress",
                 "--set", "train.steps_per_epoch=1", "--set", "train.validate=false", "--set",
                 "train.bn_recal_images=32", "--set", "train.val_bn_images=32", "--set", "train.test_at_end=false",
                 "--set", f"schedule.phases={phases}"]) == 0
    assert (tmp_path / "run" / "train_plot.png").is_file()
    fig, out = saved_figures[-1]
    assert out == []
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()  # pyplot closed the figure after saving it
    boxes = sorted((t.get_window_extent(renderer) for t in fig.axes[0].texts if t.get_visible()), key=lambda b: b.x0)
    assert len(boxes) == 2 and boxes[0].x1 <= boxes[1].x0
