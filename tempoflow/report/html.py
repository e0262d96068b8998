"""A single self-contained HTML report: videos (embedded GIFs), metric tables, loss curves."""

from __future__ import annotations

import base64
import html
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px}"
    "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    "figure{display:inline-block;margin:6px;text-align:center}"
    "img{image-rendering:pixelated;height:128px;border:1px solid #888}"
    "img.plot{image-rendering:auto;height:auto;max-width:100%}"
    "figcaption{font-size:12px;max-width:200px}"
)


@dataclass
class VideoCell:
    """One labelled clip in the report; ``gif`` is a path to a GIF file that gets embedded."""

    label: str
    gif: Path


COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def svg_curves(
    series: dict[str, list[tuple[float, float]]], width: int = 560, height: int = 240, log_y: bool = True,
    x_label: str = "step",
) -> str:
    """Inline SVG line plot of named (x, y) series on shared axes; y on a log scale when all y > 0."""
    series = {k: [(x, y) for x, y in pts if math.isfinite(y)] for k, pts in series.items()}
    series = {k: pts for k, pts in series.items() if len(pts) >= 2}
    if not series:
        return "<p>(not enough points for a curve)</p>"
    everything = [p for pts in series.values() for p in pts]
    use_log = log_y and all(y > 0 for _, y in everything)
    fy = (lambda y: math.log10(y)) if use_log else (lambda y: y)
    xs = [x for x, _ in everything]
    ys = [fy(y) for _, y in everything]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad = 40
    sx = (width - 2 * pad) / max(x1 - x0, 1e-12)
    sy = (height - 2 * pad) / max(y1 - y0, 1e-12)
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" class="curve">',
             '<rect width="100%" height="100%" fill="#fff" stroke="#ccc"/>']
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{pad + (x - x0) * sx:.1f},{height - pad - (fy(y) - y0) * sy:.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>')
        if len(series) > 1:
            parts.append(f'<text x="{width - pad - 150}" y="{pad + 14 * i}" font-size="11" fill="{colour}">'
                         f"{html.escape(name)}</text>")
    lo, hi = (10**y0, 10**y1) if use_log else (y0, y1)
    parts += [
        f'<text x="4" y="{pad - 8}" font-size="11">{hi:.4g}</text>',
        f'<text x="4" y="{height - 8}" font-size="11">{lo:.4g}{" (log scale)" if use_log else ""}</text>',
        f'<text x="{width - pad - 90}" y="{height - 8}" font-size="11">{x_label} {x1:.4g}</text></svg>',
    ]
    return "".join(parts)


def svg_histograms(
    samples: dict[str, list[float]], bins: int = 20, width: int = 560, height: int = 240, x_label: str = "value",
) -> str:
    """Inline SVG of overlaid histograms (outlines of the densities) of named 1-D samples on shared bins,
    e.g. a quantity of interest of generated vs true trajectories. Non-finite values are left out."""
    samples = {k: [v for v in vs if math.isfinite(v)] for k, vs in samples.items()}
    samples = {k: vs for k, vs in samples.items() if vs}
    if not samples:
        return "<p>(no finite values to histogram)</p>"
    everything = [v for vs in samples.values() for v in vs]
    lo, hi = min(everything), max(everything)
    if hi <= lo:  # one value: a bin of unit width around it
        lo, hi = lo - 0.5, hi + 0.5
    step = (hi - lo) / bins
    densities = {}
    for name, vs in samples.items():
        counts = [0] * bins
        for v in vs:
            counts[min(int((v - lo) / step), bins - 1)] += 1
        densities[name] = [c / (len(vs) * step) for c in counts]
    top = max(max(d) for d in densities.values())
    pad = 40
    sx, sy = (width - 2 * pad) / (hi - lo), (height - 2 * pad) / top
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" class="histogram">',
             '<rect width="100%" height="100%" fill="#fff" stroke="#ccc"/>']
    for i, (name, dens) in enumerate(densities.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts = [(lo, 0.0)]
        for b, d in enumerate(dens):  # the outline of the bars: up, across, down at every bin
            pts += [(lo + b * step, d), (lo + (b + 1) * step, d)]
        pts.append((hi, 0.0))
        coords = " ".join(f"{pad + (x - lo) * sx:.1f},{height - pad - y * sy:.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}"/>')
        parts.append(f'<text x="{width - pad - 150}" y="{pad + 14 * i}" font-size="11" fill="{colour}">'
                     f"{html.escape(name)} (n={len(samples[name])})</text>")
    parts += [
        f'<text x="4" y="{pad - 8}" font-size="11">density {top:.4g}</text>',
        f'<text x="{pad}" y="{height - 8}" font-size="11">{lo:.4g}</text>',
        f'<text x="{width - pad - 90}" y="{height - 8}" font-size="11">{x_label} {hi:.4g}</text></svg>',
    ]
    return "".join(parts)


def _table(rows: dict) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items()
    )
    return f"<table>{cells}</table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def write_report(
    path: str | Path,
    title: str,
    metrics: dict,
    videos: list[VideoCell],
    loss_log: list[dict] | None = None,
    notes: str = "",
    curves: dict[str, tuple[str, dict[str, list[tuple[float, float]]]]] | None = None,
    figures: dict[str, str] | None = None,
) -> Path:
    """Write ``path`` (HTML, no external files): metric table, embedded clips, training loss, and
    extra ``curves``: ``{title: (x label, {series name: [(x, y), ...]})}`` and ready-made inline
    ``figures`` (e.g. :func:`svg_histograms`): ``{title: svg}``."""
    path = Path(path)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if notes:
        parts.append(f"<p>{html.escape(notes)}</p>")
    parts.append("<h2>Metrics</h2>")
    parts.append(_table({k: v for k, v in metrics.items() if not isinstance(v, dict)}))
    for k, v in metrics.items():
        if isinstance(v, dict):
            parts.append(f"<h3>{html.escape(k)}</h3>{_table(v)}")
    if videos:
        parts.append("<h2>Samples</h2><div>")
        parts.extend(_img(cell) for cell in videos)
        parts.append("</div>")
    for name, (x_label, series) in (curves or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2>" + svg_curves(series, log_y=False, x_label=x_label))
    for name, svg in (figures or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2>{svg}")
    if loss_log:
        parts.append("<h2>Training loss</h2>")
        parts.append(svg_curves({"loss": [(r["step"], r["loss"]) for r in loss_log if "loss" in r]}))
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


def _img(cell: VideoCell) -> str:
    path = Path(cell.gif)
    data = base64.b64encode(path.read_bytes()).decode()
    mime, cls = ("image/png", " class='plot'") if path.suffix.lower() == ".png" else ("image/gif", "")
    return (f"<figure><img{cls} alt='{html.escape(cell.label)}' src='data:{mime};base64,{data}'>"
            f"<figcaption>{html.escape(cell.label)}</figcaption></figure>")


def write_comparison(
    path: str | Path,
    title: str,
    rows: list[tuple[str, dict]],
    video_rows: list[tuple[str, list[VideoCell]]],
    loss_logs: dict[str, list[dict]],
) -> Path:
    """Several runs side by side: one metric table (a row per run), clips per prompt, loss curves."""
    path = Path(path)
    columns: list[str] = []
    for _, metrics in rows:
        columns += [k for k in metrics if k not in columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["run", *columns])
    body = "".join(
        "<tr>" + f"<th>{html.escape(name)}</th>"
        + "".join(f"<td>{html.escape(_fmt(m.get(c, '')))}</td>" for c in columns) + "</tr>"
        for name, m in rows
    )
    parts = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<h2>Metrics</h2><table><tr>{head}</tr>{body}</table>"]
    if video_rows:
        parts.append("<h2>Samples</h2>")
        for label, cells in video_rows:
            parts.append(f"<h3>{html.escape(label)}</h3><div>{''.join(_img(c) for c in cells)}</div>")
    curves = {name: [(r["step"], r["loss"]) for r in log if "loss" in r] for name, log in loss_logs.items()}
    if any(curves.values()):
        parts.append("<h2>Training loss</h2>" + svg_curves(curves))
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


def read_log(path: str | Path) -> list[dict]:
    """Records of a run's ``log.jsonl`` (empty when the file is missing).

    Lines that are no record — one cut short by a crash, bytes that are not JSON, a record without an
    integer ``step`` or with a ``loss`` that is not a number — are skipped with one warning naming the file.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records, unreadable = [], 0
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # ValueError: not JSON
            record = None
        if _is_record(record):
            records.append(record)
        else:
            unreadable += 1
    if unreadable:
        warnings.warn(f"{path}: skipped {unreadable} unreadable line(s) (cut short when a run stopped, or damaged)")
    return records


def _is_record(record: object) -> bool:
    """A log record: a dict with an integer ``step`` and, if it has one, a numeric ``loss``."""
    if not isinstance(record, dict):
        return False
    step, loss = record.get("step"), record.get("loss", 0.0)
    return isinstance(step, int) and not isinstance(step, bool) and isinstance(loss, (int, float))
