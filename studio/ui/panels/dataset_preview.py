"""The dataset preview as HTML: the Dataset panel's short summary, and the preview pane's page
(statistics, then the first rows as the model sees them)."""

from __future__ import annotations

from html import escape
from pathlib import Path


def preview_summary_html(p: dict) -> str:
    stats = p.get("lengths") or {}
    parts = [f"<b>{escape(str(p.get('format', '?')))}</b> · {p.get('train_examples', '?')} train"
             f" / {p.get('eval_examples') or 0} eval examples"]
    if stats:
        parts.append(f"tokens per row: median {stats.get('median', 0):g}, p95 {stats.get('p95', 0):g}, "
                     f"max {stats.get('max', 0):g}")
    if p.get("truncated"):
        parts.append(f"<span style='color:#b26b00'>⚠ {p['truncated']} rows longer than max_seq_len "
                     "will be truncated</span>")
    return "<br>".join(parts)


def preview_html(p: dict) -> str:
    """The dataset preview: statistics, then the first rows as the model sees them, with the
    tokens that carry loss highlighted."""
    stats = p.get("lengths") or {}
    head = [f"<h3>{escape(Path(str(p.get('path', ''))).name)}</h3>",
            f"<p><b>format</b> {escape(str(p.get('format', '?')))} · <b>rows</b> {p.get('rows', '?')} in the file, "
            f"{p.get('train_examples', '?')} training and {p.get('eval_examples') or 0} evaluation examples"]
    if p.get("chat_template"):
        head.append(f" · <b>chat template</b> {escape(str(p['chat_template']))}")
    head.append("</p>")
    if stats:
        head.append("<p><b>tokens per row</b> " + ", ".join(
            f"{k} {stats[k]:,.0f}" for k in ("min", "median", "mean", "p95", "max") if k in stats)
            + (f" · total {p['total_tokens']:,}" if p.get("total_tokens") else "")
            + (f" · {p['loss_tokens']:,} carry loss" if p.get("loss_tokens") else "") + "</p>")
    if p.get("truncated"):
        head.append(f"<p style='color:#b26b00'>{p['truncated']} rows are longer than max_seq_len "
                    f"({p.get('max_seq_len', '?')}) and will be truncated.</p>")
    if p.get("label_names"):
        counts = p.get("label_counts") or {}
        head.append("<p><b>labels</b> " + escape(", ".join(
            f"{name} ({counts[name]})" if name in counts else str(name) for name in p["label_names"])) + "</p>")
    for w in p.get("warnings") or []:
        head.append(f"<p style='color:#b26b00'>⚠ {escape(str(w))}</p>")
    head.append("<p style='font-size:small'>Highlighted text carries the loss (what the model learns to "
                "write); the rest is context.</p>")
    rows = []
    for i, ex in enumerate(p.get("examples") or []):
        segments = ex.get("segments") or [[ex.get("text", ""), True]]
        body = "".join(
            (f"<span style='background:#d7ecd9;color:#0b3d14'>{escape(text)}</span>" if trained
             else escape(text)) for text, trained in segments)
        label = f" — label <b>{escape(str(ex['label']))}</b>" if ex.get("label") is not None else ""
        tokens = f" · {ex['tokens']} tokens" if ex.get("tokens") is not None else ""
        cut = (f"<span style='color:#999'>{escape(ex['cut_text'])}</span>" if ex.get("cut_text") else "")
        rows.append(f"<p><b>row {ex.get('row', i + 1)}</b>{tokens}{label}"
                    + (" · <i>truncated</i>" if ex.get("truncated") else "") + "</p>"
                    f"<pre style='white-space:pre-wrap'>{body}{cut}</pre>")
    return "".join(head) + "<hr>" + "".join(rows)
