"""Rendering of evaluation results: HTML pages, figures, Markdown and terminal tables.

The schemas and the computations live in `evaluation` (`evaluation.report`, `evaluation.compare`,
...); this package only turns them into text and pictures. It imports them; nothing in `evaluation`
outside this package imports it.

- `page`: the HTML page kit (style sheet, page shell, escaped tables, inline PNG figures);
- `figures`: matplotlib figures (energy histograms, ROC/PR, calibration and training curves);
- `report_page`: the evaluation report page (`render_html`, `write_html`);
- `comparison_page`: the report comparison page (`render_comparison_html`, `write_comparison_html`);
- `markdown`: Markdown summaries of a report (`to_markdown`) and a comparison (`comparison_markdown`);
- `tables`: rows for terminal tables (`summary_rows`, `comparison_table`, `gate_table`);
- `text`: plain-text formatting of intervals and realised rates (`format_ci`, `format_realised`).

Nothing is imported here: `figures` imports matplotlib, which is slow to import, so callers import
the module they need.
"""
