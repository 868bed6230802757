"""Titles that fit their figure: wrapped, then shrunk, until their rendered extent is inside it."""
from __future__ import annotations

import textwrap

MIN_FONTSIZE = 6


def fit_title(ax, text: str, fontsize: float = 10, min_fontsize: float = MIN_FONTSIZE):
    """Set `ax`'s title to `text`, lay the figure out, and wrap or shrink the title until it lies
    within the figure (long space, table or device names would otherwise run off its edges).
    Call it last, instead of `fig.tight_layout()`. Returns the title artist."""
    fig = ax.figure
    lines = str(text).split("\n")
    width = max(len(line) for line in lines) or 1
    title = ax.set_title(text, fontsize=fontsize)
    size = fontsize
    for _ in range(60):
        fig.tight_layout()
        if not outside(fig, [title]):
            break
        if size > min_fontsize:
            size = max(min_fontsize, size - 1)
        else:
            width = max(10, int(width * 0.8))
        title.set_fontsize(size)
        title.set_text("\n".join(textwrap.fill(line, width, break_long_words=True) for line in lines))
    return title


def outside(fig, texts=None) -> list:
    """The visible, non-empty texts of `fig` (titles, suptitle, annotations and legend entries, or
    `texts`) whose rendered extent leaves the figure."""
    canvas = fig.canvas
    if not hasattr(canvas, "get_renderer"):  # a Figure made without pyplot has no drawing canvas yet
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
    fig.draw_without_rendering()  # legend "best" placement and layout happen at draw time
    renderer = canvas.get_renderer()
    box = fig.bbox
    found = []
    for t in texts if texts is not None else _texts(fig):
        if not t.get_visible() or not t.get_text():
            continue
        e = t.get_window_extent(renderer)
        if e.x0 < box.x0 - 0.5 or e.x1 > box.x1 + 0.5 or e.y0 < box.y0 - 0.5 or e.y1 > box.y1 + 0.5:
            found.append(t)
    return found


def _texts(fig) -> list:
    texts = list(fig.texts) + ([fig._suptitle] if getattr(fig, "_suptitle", None) is not None else [])
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            texts += legend.get_texts()
    return texts


def fit_labels(fig, labels, spans_px, min_fontsize: float = MIN_FONTSIZE) -> None:
    """Shrink, then cut ("..."), each label until it is no wider than its span (pixels) and lies
    inside the figure: e.g. the phase names over a training plot, where phases can be short and names long."""
    canvas = fig.canvas if hasattr(fig.canvas, "get_renderer") else None
    if canvas is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    for label, span in zip(labels, spans_px):
        full = label.get_text()
        keep = len(full)
        for _ in range(200):
            e = label.get_window_extent(renderer)
            if e.width <= span and e.x0 >= fig.bbox.x0 and e.x1 <= fig.bbox.x1:
                break
            if label.get_fontsize() > min_fontsize:
                label.set_fontsize(max(min_fontsize, label.get_fontsize() - 1))
            elif keep > 1:
                keep -= 1
                label.set_text(full[:keep] + "...")
            else:
                label.set_visible(False)  # no room at all
                break


def plot_convergence(curves: dict, path, title: str, ylabel: str = "best so far", budget_note: str = ""):
    """PNG of best-so-far curves on one figure: `curves` maps a label (a strategy) to a results
    history {"evaluations": [...], "best": [...]}; the x axis (evaluations) is logarithmic, so the
    early climb and the late gains both show. Written atomically; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgenas.io import atomic_write

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, history) in enumerate(curves.items()):
        if history.get("evaluations"):
            ax.step(history["evaluations"], history["best"], where="post", color=f"C{i}", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("architectures evaluated" + (f" ({budget_note})" if budget_note else ""))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fit_title(ax, title)
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    finally:
        plt.close(fig)
