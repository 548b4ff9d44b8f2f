"""The HTML page kit shared by the report page and the comparison page: the inline style sheet, the
page shell, escaped tables and cells, the data-checks status badge, and figures inlined as base64
PNGs (no script, nothing fetched from a URL, so a page opens anywhere)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from evaluation.report import data_checks_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.num { text-align: right; font-family: monospace; }
tr.ebm td { font-weight: bold; background: #eef4ff; }
tr.failrow td { background: #fde8ec; }
img { max-width: 100%; margin: 0.5em 0; }
.conventions { background: #f4f4f4; padding: 0.5em 1em; border-left: 4px solid #888; }
.pass { color: #176e1c; font-weight: bold; }
.fail { color: #b00020; font-weight: bold; }
.unknown { color: #8a6d00; font-weight: bold; }
.side { display: flex; gap: 1em; }
.side > div { flex: 1; min-width: 0; }
.note { color: #555; font-size: 0.9em; }
"""


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def status_span(passed: bool | None) -> str:
    css = {True: "pass", False: "fail", None: "unknown"}[passed]
    return f'<span class="{css}">{escape(data_checks_text(passed))}</span>'


def figure_img(figure: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{encoded}">'


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    row_classes: Sequence[str] | None = None,
    raw_first: bool = False,
) -> str:
    """A table; every cell is escaped except the first column when `raw_first` (trusted labels
    written in this module, which may hold entities such as &le;)."""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = row_classes[index] if row_classes else ""
        opening = f'<tr class="{escape(css)}">' if css else "<tr>"
        cells = [
            f"<td>{value}</td>" if raw_first and position == 0 else cell(value) for position, value in enumerate(row)
        ]
        body.append(opening + "".join(cells) + "</tr>\n")
    return f"<table>\n<tr>{head}</tr>\n{''.join(body)}</table>"


def cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{escape(str(value))}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    if isinstance(value, float):
        return f'<td class="num">{escape(f"{value:.6g}")}</td>'
    return f"<td>{escape(str(value))}</td>"
