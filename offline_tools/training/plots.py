"""Pictures as PNGs (matplotlib's Agg backend, no display needed): the training curves of a `regrad train`
run, the scores of `regrad evaluate` / `regrad score` (modes x datasets), the serving bench's curves."""

from __future__ import annotations

import io
import json
from pathlib import Path

__all__ = ["compact_png", "plot_scores", "plot_serving_bench", "plot_training_log"]


PLOT_COLOURS = 16   # a compact plot's palette (`compact_png`)


def compact_png(image: str | Path | io.BytesIO, png_path: str | Path) -> Path:
    """Write `image` to `png_path` as a 16-colour palette PNG: a line plot of a few colours on white looks
    the same to the eye (exact when it has at most 16 colours; anti-aliased edges take the nearest) at
    about a quarter of the bytes of RGBA; a shipped learner's folder carries one plot per run and must stay
    under 5 MB (256 colours took 72 % more than 16 on the shipped runs' six plots). Deterministic."""
    from offline_tools.errors import import_extra

    Image = import_extra("PIL.Image", "train", "writing a compact PNG")
    png_path = Path(png_path)
    with Image.open(image) as picture:
        palette = picture.convert("RGB").quantize(colors=PLOT_COLOURS)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    palette.save(png_path, format="PNG", optimize=True)
    return png_path


def _events(log_path: Path) -> tuple[list[dict], list[dict]]:
    train, validation = [], []
    for line in log_path.read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a run that was stopped
        if event.get("event") == "train":
            train.append(event)
        elif event.get("event") == "validation" and "gain" in event:
            validation.append(event)
    return train, validation


def plot_training_log(log_path: str | Path, png_path: str | Path) -> Path | None:
    """Meta-loss per step; validation answer loss with/without gradients; EM with/without; α.

    Returns the PNG's path, or None when the log holds nothing to plot yet.
    """
    from offline_tools.errors import import_extra

    matplotlib = import_extra("matplotlib", "train", "plotting the training curves")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log_path, png_path = Path(log_path), Path(png_path)
    train, validation = _events(log_path)
    if not train and not validation:
        return None
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    steps = [e["step"] for e in train]
    axes[0].plot(steps, [e["loss"] for e in train], lw=0.6, alpha=0.5, label="meta-batch")
    if len(train) >= 10:
        k = max(5, len(train) // 20)
        smooth = [sum(e["loss"] for e in train[max(0, i - k + 1) : i + 1]) / len(train[max(0, i - k + 1) : i + 1])
                  for i in range(len(train))]
        axes[0].plot(steps, smooth, lw=1.5, label=f"mean of {k}")
    axes[0].set(title="outer (answer) loss, training", xlabel="step")
    axes[0].legend()
    v_steps = [e["step"] for e in validation]
    axes[1].plot(v_steps, [e["loss_closed"] for e in validation], "o-", label="without gradients (γ=0)")
    axes[1].plot(v_steps, [e["loss"] for e in validation], "o-", label="with gradients (γ=1)")
    axes[1].set(title="validation answer loss", xlabel="step")
    axes[1].legend()
    axes[2].plot(v_steps, [e["em"] for e in validation], "o-", label="EM with gradients")
    axes[2].plot(v_steps, [e["em_closed"] for e in validation], "o-", label="EM closed-book")
    axes[2].plot(v_steps, [e["f1"] for e in validation], "--", label="F1 with gradients")
    axes[2].set(title="validation answers", xlabel="step", ylim=(0, 100))
    axes[2].legend()
    axes[3].plot(v_steps, [e["alpha_mean"] for e in validation], "o-", label="α mean")
    axes[3].fill_between(v_steps, [e["alpha_min"] for e in validation], [e["alpha_max"] for e in validation],
                         alpha=0.2, label="α min–max")
    axes[3].set(title="step sizes", xlabel="step")
    axes[3].legend()
    fig.tight_layout()
    rendered = io.BytesIO()
    fig.savefig(rendered, format="png", dpi=80)
    plt.close(fig)
    return compact_png(rendered, png_path)


def plot_scores(modes: dict[str, dict], png_path: str | Path, *, title: str | None = None) -> Path:
    """Grouped bars of EM and F1: one group per dataset (then the macro mean over datasets), one bar per mode.

    `modes` is scores.json's `modes` (mode → `{"datasets": {name: {"n", "em", "f1", ...}}, "overall_macro"}`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({d for table in modes.values() for d in table["datasets"]})
    groups = names + (["mean (macro)"] if len(names) > 1 else [])
    width = 0.8 / max(1, len(modes))
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(6.0, 0.4 * len(groups) * max(1, len(modes))), 4))
    for ax, metric in zip(axes, ("em", "f1")):
        for i, (mode, table) in enumerate(modes.items()):
            rows = [table["datasets"].get(d) for d in names] + ([table["overall_macro"]] if len(names) > 1 else [])
            xs = [g + (i - (len(modes) - 1) / 2) * width for g in range(len(groups))]
            bars = ax.bar(xs, [row[metric] if row else 0.0 for row in rows], width, label=mode)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(range(len(groups)), groups)
        ax.set(title=f"{metric.upper()} per dataset and mode", ylabel=metric.upper(), ylim=(0, 105))
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, ncol=2)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    rendered = io.BytesIO()
    fig.savefig(rendered, format="png", dpi=80)
    plt.close(fig)
    return compact_png(rendered, png_path)


def plot_serving_bench(record: dict, png_path: str | Path) -> Path:
    """Throughput and p95 latency against closed-loop clients, one line per scheduler, from the record
    `bench/serving_bench.py` prints last (`<scheduler>_rps_at_<c>`, `<scheduler>_p95_ms_at_<c>`,
    `inplace_rps`). A level missing from the record is left out of its line."""
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple[str, str], dict[int, float]] = {}
    for key, value in record.items():
        found = re.fullmatch(r"(\w+?)_(rps|p95_ms)_at_(\d+)", key)
        if found and isinstance(value, (int, float)) and found[1] != "unadapted":
            curves.setdefault((found[1], found[2]), {})[int(found[3])] = float(value)
    schedulers = sorted({s for s, _ in curves})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for scheduler in schedulers:
        for ax, metric in ((left, "rps"), (right, "p95_ms")):
            points = sorted(curves.get((scheduler, metric), {}).items())
            if points:
                ax.plot([c for c, _ in points], [v for _, v in points], "o-", label=scheduler)
    if "inplace_rps" in record:
        left.axhline(record["inplace_rps"], color="grey", ls="--", label="in-place, one at a time")
    left.set(title="throughput (mode regrad)", xlabel="closed-loop clients", ylabel="requests / s", ylim=(0, None))
    right.set(title="p95 latency", xlabel="closed-loop clients", ylabel="ms", ylim=(0, None))
    clients = sorted({c for points in curves.values() for c in points})
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if record.get("machine"):
        fig.suptitle(f"{record['machine']}; base weights {record.get('base_dtype', '?')}", fontsize=9)
    fig.tight_layout()
    rendered = io.BytesIO()
    fig.savefig(rendered, format="png", dpi=80)
    plt.close(fig)
    return compact_png(rendered, png_path)
