#!/usr/bin/env python3
"""Draws the panels of contrib/grafana/natter.json from a Prometheus
server's real data, as an HTML page (then a PNG with headless Chromium).

This is NOT Grafana: Grafana could not be installed where the picture in
docs/OPERATIONS.md was made (it is in none of the package registries that
machine reaches). The page has the dashboard's panels, in its layout, each
running the dashboard's own PromQL queries (`$instance` as every instance,
`$__rate_interval` as RATE_INTERVAL) against Prometheus's HTTP API over the
last MINUTES; only the drawing is simpler than Grafana's.

  python3 contrib/grafana/render.py --prometheus http://127.0.0.1:9090 \\
      --minutes 5 --out dashboard.html [--png docs/dashboard.png]
"""
import argparse
import html
import json
import math
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#b877d9", "#f2495c",
          "#37872d", "#fade2a", "#1f60c4", "#8f3bb8"]
CELL_W, CELL_H = 60, 36  # pixels per grid column and grid row


def query_range(prometheus, expr, start, end, step):
    args = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{args}", timeout=30) as r:
        answer = json.load(r)
    if answer.get("status") != "success":
        sys.exit(f"Prometheus refused {expr!r}: {answer}")
    return answer["data"]["result"]


def legend(fmt, labels):
    if not fmt:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def human(value, unit):
    if value is None or math.isnan(value):
        return "–"
    if unit == "percentunit":
        return f"{100 * value:.1f}%"
    if unit == "s":
        for scale, name in [(1, "s"), (1e-3, "ms"), (1e-6, "µs")]:
            if abs(value) >= scale or scale == 1e-6:
                return f"{value / scale:.3g} {name}"
    suffix = {"Bps": "B/s", "ops": "/s"}.get(unit, "")
    for scale, name in [(1e9, "G"), (1e6, "M"), (1e3, "k")]:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {name}{suffix}"
    return f"{value:.3g}{(' ' + suffix) if suffix else ''}"


def series_of(panel, prometheus, start, end, step, rate_interval):
    found = []
    for target in panel["targets"]:
        expr = (target["expr"].replace('instance=~"$instance"', 'instance=~".*"')
                .replace("$__rate_interval", rate_interval))
        for result in query_range(prometheus, expr, start, end, step):
            points = [(float(t), float(v)) for t, v in result["values"]]
            points = [(t, v) for t, v in points if not math.isnan(v) and not math.isinf(v)]
            if points:
                found.append((legend(target.get("legendFormat"), result["metric"]), points))
    return found


def chart(series, unit, w, h, start, end):
    """An SVG line chart of `series` in a w × h box."""
    pad_l, pad_r, pad_t, pad_b = 64, 8, 6, 18
    values = [v for _, pts in series for _, v in pts] or [0.0]
    lo, hi = min(0.0, min(values)), max(values)
    if unit == "percentunit":
        hi = max(hi, 1.0) if hi > 0.5 else max(hi * 1.2, 0.01)
    hi = hi if hi > lo else lo + 1
    x = lambda t: pad_l + (t - start) / (end - start) * (w - pad_l - pad_r)
    y = lambda v: pad_t + (1 - (v - lo) / (hi - lo)) * (h - pad_t - pad_b)
    out = [f'<svg width="{w}" height="{h}">']
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        out.append(f'<line x1="{pad_l}" x2="{w - pad_r}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>')
        out.append(f'<text x="{pad_l - 4}" y="{y(v) + 4:.1f}" class="axis" text-anchor="end">{html.escape(human(v, unit))}</text>')
    for i in range(6):
        t = start + (end - start) * i / 5
        label = time.strftime("%H:%M:%S", time.gmtime(t))
        out.append(f'<text x="{x(t):.1f}" y="{h - 4}" class="axis" text-anchor="middle">{label}</text>')
    for n, (_, pts) in enumerate(series):
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{COLORS[n % len(COLORS)]}" stroke-width="1.5"/>')
    out.append("</svg>")
    return "".join(out)


def sparkline(points, w, h, start, end):
    lo = min(0.0, min(v for _, v in points))
    hi = max(v for _, v in points)
    hi = hi if hi > lo else lo + 1
    x = lambda t: (t - start) / (end - start) * w
    y = lambda v: (1 - (v - lo) / (hi - lo)) * (h - 2) + 1
    line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
    area = f"{x(points[0][0]):.1f},{h} {line} {x(points[-1][0]):.1f},{h}"
    return (f'<svg width="{w}" height="{h}"><polygon points="{area}" fill="#73bf6933"/>'
            f'<polyline points="{line}" fill="none" stroke="#73bf69" stroke-width="1.5"/></svg>')


def render_panel(panel, prometheus, start, end, step, rate_interval):
    grid = panel["gridPos"]
    w, h = grid["w"] * CELL_W - 8, grid["h"] * CELL_H - 8
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    series = series_of(panel, prometheus, start, end, step, rate_interval)
    style = (f'left:{grid["x"] * CELL_W}px;top:{grid["y"] * CELL_H}px;'
             f'width:{w}px;height:{h}px')
    body = [f'<div class="panel" style="{style}"><div class="title">{html.escape(panel["title"])}</div>']
    if panel["type"] == "stat":
        # The last value over a sparkline of the whole range, as Grafana's
        # stat panel with graphMode "area" shows it.
        last = series[0][1][-1][1] if series else None
        body.append(f'<div class="stat">{html.escape(human(last, unit))}</div>')
        if series:
            body.append(sparkline(series[0][1], w - 8, h - 80, start, end))
    else:
        legend_h = 20 * max(1, math.ceil(len(series) / 4))
        body.append(chart(series, unit, w - 8, h - 28 - legend_h, start, end))
        items = "".join(f'<span><i style="background:{COLORS[n % len(COLORS)]}"></i>{html.escape(name)}</span>'
                        for n, (name, _) in enumerate(series)) or "<span>no data</span>"
        body.append(f'<div class="legend">{items}</div>')
    body.append("</div>")
    return "".join(body)


PAGE = """<!doctype html><meta charset="utf-8"><title>{title}</title>
<style>
body {{ background:#111217; color:#ccccdc; font:12px sans-serif; margin:0; padding:12px; }}
h1 {{ font-size:16px; margin:0 0 4px; }} .note {{ color:#8e8e9e; margin-bottom:10px; }}
.board {{ position:relative; width:{width}px; height:{height}px; }}
.panel {{ position:absolute; background:#181b1f; border:1px solid #2c3235; border-radius:2px; padding:4px; box-sizing:border-box; overflow:hidden; }}
.title {{ font-weight:bold; margin:0 0 4px 4px; }} .stat {{ font-size:30px; color:#73bf69; text-align:center; margin-top:2px; }}
.grid {{ stroke:#2c3235; stroke-width:1; }} .axis {{ fill:#8e8e9e; font-size:10px; }}
.legend span {{ margin-right:12px; white-space:nowrap; }} .legend i {{ display:inline-block; width:10px; height:3px; margin:0 4px 3px 0; }}
</style>
<h1>{title}</h1>
<div class="note">{note}</div>
<div class="board">{panels}</div>
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dashboard", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "natter.json"))
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--end", type=float, help="Unix time of the right edge (default: now)")
    parser.add_argument("--rate-interval", default="15s")
    parser.add_argument("--out", default="dashboard.html")
    parser.add_argument("--png", help="also screenshot the page with headless Chromium")
    args = parser.parse_args()
    dashboard = json.load(open(args.dashboard))
    end = args.end or time.time()
    start = end - 60 * args.minutes
    step = max(1, int(60 * args.minutes / 300))
    panels = dashboard["panels"]
    width = 24 * CELL_W
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels) * CELL_H
    note = ("Drawn by contrib/grafana/render.py, not by Grafana: the panels and PromQL queries of "
            "contrib/grafana/natter.json, run against Prometheus scraping a real natter server.")
    page = PAGE.format(title=html.escape(dashboard["title"]), note=html.escape(note),
                       width=width, height=height,
                       panels="".join(render_panel(p, args.prometheus, start, end, step, args.rate_interval)
                                      for p in panels))
    with open(args.out, "w") as f:
        f.write(page)
    print(f"wrote {args.out}", file=sys.stderr)
    if args.png:
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={os.path.abspath(args.png)}",
                        f"--window-size={width + 24},{height + 80}",
                        "file://" + os.path.abspath(args.out)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"wrote {args.png}", file=sys.stderr)


if __name__ == "__main__":
    main()
