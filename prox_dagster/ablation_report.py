"""An ablation's result (``AblationResult.to_json()``) as a table, a Markdown report (what the
Dagster UI shows, the plot inlined as a data URI) and an SVG plot of the validation-loss
curves."""

from __future__ import annotations

import base64
from html import escape

from .untrusted import markdown_text

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def ablation_table(result: dict) -> tuple[str, list[str], list[list[str]]]:
    rows = []
    for arm in result["arms"]:
        rows.append([arm["name"], f"{arm['val_loss_mean']:.4f} ± {arm['val_loss_std']:.4f}",
                     f"{arm['bits_per_byte_mean']:.4f} ± {arm['bits_per_byte_std']:.4f}",
                     f"{arm['tokens']:,}", f"{arm['documents']:,}",
                     f"{arm['epochs']}{' (repeated)' if arm['repeated'] else ''}",
                     arm["source"]])
    config = result["config"]
    title = (f"validation loss, {len(config['seeds'])} seeds per arm, "
             f"{config['train_tokens']:,} training tokens each (config {config['name']}, "
             f"{result['device']})")
    return title, ["arm", "loss (nats/token)", "bits per byte", "arm tokens", "documents",
                   "epochs", "source"], rows


def _mean_curves(result: dict) -> dict[str, list[tuple[int, float]]]:
    curves = {}
    for arm in result["arms"]:
        runs = arm["runs"]
        steps = [step for step, _ in runs[0]["curve"]]
        curves[arm["name"]] = [(step, sum(r["curve"][i][1] for r in runs) / len(runs))
                               for i, step in enumerate(steps)]
    return curves


def svg_plot(result: dict, width: int = 640, height: int = 360) -> str:
    curves = _mean_curves(result)
    values = [v for curve in curves.values() for _, v in curve]
    last = max(step for curve in curves.values() for step, _ in curve)
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    left, top, plot_w, plot_h = 60, 20, width - 180, height - 60

    def xy(step: int, value: float) -> str:
        return f"{left + step / last * plot_w:.1f},{top + (high - value) / span * plot_h:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" '
             'stroke="#999"/>',
             f'<text x="{left}" y="{height - 20}">step 0</text>',
             f'<text x="{left + plot_w - 60}" y="{height - 20}">step {last}</text>',
             f'<text x="4" y="{top + 10}">{high:.3f}</text>',
             f'<text x="4" y="{top + plot_h}">{low:.3f}</text>',
             f'<text x="{left}" y="{height - 4}">mean validation loss (nats/token) per arm</text>']
    for i, (name, curve) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        points = " ".join(xy(step, value) for step, value in curve)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{points}"/>')
        parts.append(f'<text x="{left + plot_w + 10}" y="{top + 16 * (i + 1)}" '
                     f'fill="{color}">{escape(name)}</text>')
    return "\n".join(parts + ["</svg>"]) + "\n"


def verdict_lines(result: dict) -> list[str]:
    lines = []
    for v in result["verdicts"]:
        if v["a"] >= v["b"] and not any(w["beats"] for w in result["verdicts"]
                                        if {w["a"], w["b"]} == {v["a"], v["b"]}):
            lines.append(f"- {v['a']} and {v['b']}: no difference beyond 2 × pooled std "
                         f"(gap {abs(v['gap']):.4f}, threshold {v['threshold']:.4f})")
        elif v["beats"]:
            lines.append(f"- **{v['a']} beats {v['b']}**: loss lower by {v['gap']:.4f} > "
                         f"2 × pooled std {v['threshold']:.4f}")
    return lines


def ablation_markdown(result: dict, image: str | None = None) -> str:
    """The report; ``image``: where the SVG plot is (a path, or :func:`svg_data_uri`)."""
    title, headers, rows = ablation_table(result)
    validation = result["validation"]
    table = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    table += ["| " + " | ".join(markdown_text(cell, 200) for cell in row) + " |" for row in rows]
    repeated = [a["name"] for a in result["arms"] if a["repeated"]]
    return "\n".join([
        f"**{title}**", "", *table, "",
        "Verdicts (an arm beats another only when its mean loss is lower by more than twice "
        "the pooled standard deviation):", *verdict_lines(result), "",
        *([f"Repeated in epochs to fill the budget: {', '.join(repeated)}.", ""] if repeated
          else []),
        f"Validation: {validation['documents']} held-out clean texts, {validation['lines']:,} "
        f"lines; {validation['removed_exact']:,} removed as in an arm's training text and "
        f"{validation['removed_near']:,} nearly ({validation['removed_share']:.1%} of the "
        f"words); {validation['tokens']:,} tokens scored.", "",
        *([f"![mean validation loss per arm over training]({image})"] if image else []),
    ]) + "\n"


def svg_data_uri(result: dict) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg_plot(result).encode()).decode()
