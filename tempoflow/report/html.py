"""A single self-contained HTML report: videos (embedded GIFs), metric tables, loss curves."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1100px}"
    "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    "figure{display:inline-block;margin:6px;text-align:center}"
    "img{image-rendering:pixelated;width:192px;border:1px solid #888}"
    "figcaption{font-size:12px;max-width:200px}"
)


@dataclass
class VideoCell:
    """One labelled clip in the report; ``gif`` is a path to a GIF file that gets embedded."""

    label: str
    gif: Path


def _svg_curve(points: list[tuple[float, float]], width: int = 520, height: int = 220, log_y: bool = True) -> str:
    """An inline SVG polyline of (x, y) points, y on a log scale when all y > 0."""
    import math

    pts = [(x, y) for x, y in points if math.isfinite(y)]
    if len(pts) < 2:
        return "<p>(not enough points for a curve)</p>"
    use_log = log_y and all(y > 0 for _, y in pts)
    ys = [math.log10(y) if use_log else y for _, y in pts]
    xs = [x for x, _ in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    pad = 36
    sx = (width - 2 * pad) / max(x1 - x0, 1e-12)
    sy = (height - 2 * pad) / max(y1 - y0, 1e-12)
    coords = " ".join(f"{pad + (x - x0) * sx:.1f},{height - pad - (y - y0) * sy:.1f}" for x, y in zip(xs, ys))
    lo = 10**y0 if use_log else y0
    hi = 10**y1 if use_log else y1
    return (
        f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg" class="curve">'
        f'<rect width="100%" height="100%" fill="#fff" stroke="#ccc"/>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{coords}"/>'
        f'<text x="4" y="{pad - 8}" font-size="11">{hi:.4g}</text>'
        f'<text x="4" y="{height - 8}" font-size="11">{lo:.4g}{" (log scale)" if use_log else ""}</text>'
        f'<text x="{width - pad - 60}" y="{height - 8}" font-size="11">step {x1:.0f}</text></svg>'
    )


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
) -> Path:
    """Write ``path`` (HTML, no external files): metric table, embedded clips, training loss."""
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
        for cell in videos:
            data = base64.b64encode(Path(cell.gif).read_bytes()).decode()
            parts.append(
                f"<figure><img alt='{html.escape(cell.label)}' src='data:image/gif;base64,{data}'>"
                f"<figcaption>{html.escape(cell.label)}</figcaption></figure>"
            )
        parts.append("</div>")
    if loss_log:
        parts.append("<h2>Training loss</h2>")
        parts.append(_svg_curve([(r["step"], r["loss"]) for r in loss_log if "loss" in r]))
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


def read_log(path: str | Path) -> list[dict]:
    """Records of a run's ``log.jsonl`` (empty when the file is missing)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
