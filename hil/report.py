"""The HIL report: one self-contained HTML page (and report.json) in the --hil-report folder.

The page needs nothing but a browser: CSS inline, images embedded as base64 PNG, no script.
For each test it shows the outcome, the failure category from triage (flash, link, power,
boot, assertion) with the reason, the objectives met or missed, a latency histogram and the
power plot when the test recorded them, the step timings, the flash chain (bundle hash ->
verified flash -> booted slot) and the tail of the serial transcript. JUnit XML is pytest's
own (`--junitxml`); this page sits beside it.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Objective:
    name: str
    target: float
    measured: float
    unit: str
    kind: str = "max"  # "max": measured must be <= target; "min": >=

    @property
    def met(self) -> bool:
        if self.kind == "min":
            return self.measured >= self.target
        return self.measured <= self.target


@dataclass
class TestRecord:
    nodeid: str
    outcome: str = "passed"
    seconds: float = 0.0
    category: str = ""
    reason: str = ""
    attempts: int = 1
    objectives: list[Objective] = field(default_factory=list)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    steps: list[tuple[str, float]] = field(default_factory=list)
    chain: dict[str, Any] = field(default_factory=dict)
    images: dict[str, str] = field(default_factory=dict)  # title -> PNG path
    console: str = ""  # transcript excerpt
    files: dict[str, str] = field(default_factory=dict)  # evidence name -> path


def histogram_png(values: list[float], title: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 2.6), dpi=90)
    ax.hist(values, bins=min(40, max(5, len(values) // 3)), color="#3a7bd5")
    ax.set_xlabel("ms")
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.passed{color:#1a7f37}.failed{color:#c62828}.skipped{color:#777}.met{background:#e6f4ea}.missed{background:#fdecea}
pre{background:#f6f8fa;padding:.6em;max-height:24em;overflow:auto;font-size:12px}
section{border-top:2px solid #eee;margin-top:1.5em;padding-top:.5em}img{max-width:100%}
"""


def _img(path: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).name)}" src="data:image/png;base64,{data}">'


def write(records: list[TestRecord], out: Path, meta: dict[str, Any]) -> Path:
    """Writes out/index.html and out/report.json; returns the HTML path."""
    out.mkdir(parents=True, exist_ok=True)
    for r in records:
        for name, values in r.latencies_ms.items():
            if values and f"latency {name}" not in r.images:
                safe = "".join(c if c.isalnum() else "_" for c in f"{r.nodeid}_{name}")[-80:]
                png = histogram_png(values, f"{name} latency", out / f"hist_{safe}.png")
                r.images[f"latency {name}"] = str(png)
    (out / "report.json").write_text(
        json.dumps({"meta": meta, "tests": [asdict(r) for r in records]}, indent=2, default=str)
    )
    esc = html.escape
    counts: dict[str, int] = {}
    for r in records:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    parts = [
        f"<!doctype html><meta charset=utf-8><title>HIL report</title><style>{_CSS}</style>",
        "<h1>HIL report</h1>",
        "<table>"
        + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in meta.items())
        + "</table>",
        "<p>" + ", ".join(f'<span class="{k}">{v} {k}</span>' for k, v in counts.items()) + "</p>",
        "<h2>Objectives</h2><table><tr><th>test</th><th>objective</th><th>target</th>"
        "<th>measured</th><th>result</th></tr>",
    ]
    for r in records:
        for o in r.objectives:
            cls = "met" if o.met else "missed"
            op = "&le;" if o.kind == "max" else "&ge;"
            parts.append(
                f'<tr class="{cls}"><td>{esc(r.nodeid)}</td><td>{esc(o.name)}</td>'
                f"<td>{op} {o.target:g} {esc(o.unit)}</td><td>{o.measured:.4g} {esc(o.unit)}</td>"
                f"<td>{cls}</td></tr>"
            )
    parts.append(
        "</table><h2>Tests</h2><table><tr><th>test</th><th>outcome</th><th>category</th>"
        "<th>seconds</th><th>reason</th></tr>"
    )
    for i, r in enumerate(records):
        parts.append(
            f'<tr><td><a href="#t{i}">{esc(r.nodeid)}</a></td><td class="{r.outcome}">'
            f"{r.outcome}</td><td>{esc(r.category)}</td><td>{r.seconds:.2f}</td>"
            f"<td>{esc(r.reason[:160])}</td></tr>"
        )
    parts.append("</table>")
    for i, r in enumerate(records):
        parts.append(
            f'<section id="t{i}"><h3 class="{r.outcome}">{esc(r.nodeid)}: {r.outcome}'
            f"{' (' + esc(r.category) + ')' if r.category else ''}</h3>"
        )
        if r.reason:
            parts.append(f"<pre>{esc(r.reason)}</pre>")
        if r.attempts > 1:
            parts.append(f"<p>attempts: {r.attempts} (infrastructure retries)</p>")
        if r.chain:
            chain = " &rarr; ".join(
                f"{esc(k)}: <code>{esc(str(v))}</code>" for k, v in r.chain.items()
            )
            parts.append(f"<p>flash chain: {chain}</p>")
        if r.steps:
            parts.append(
                "<table><tr><th>step</th><th>seconds</th></tr>"
                + "".join(f"<tr><td>{esc(n)}</td><td>{s:.3f}</td></tr>" for n, s in r.steps)
                + "</table>"
            )
        for title, path in r.images.items():
            if Path(path).exists():
                parts.append(f"<p>{esc(title)}</p>{_img(path)}")
        for name, path in r.files.items():
            parts.append(f"<p>evidence: {esc(name)}: <code>{esc(path)}</code></p>")
        if r.console:
            parts.append(
                f"<details><summary>serial transcript</summary><pre>{esc(r.console)}</pre></details>"
            )
        parts.append("</section>")
    page = out / "index.html"
    page.write_text("\n".join(parts))
    return page
