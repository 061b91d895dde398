"""Self-contained HTML reports of a run."""

import jinja2

# Every page the package renders comes from templates/ beside this file, autoescaped.
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("superposition.report", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
)


def _num(value):
    """Numbers in pages: a float to 4 significant digits, anything else as it is."""
    return f"{value:.4g}" if isinstance(value, float) else value


TEMPLATES.filters["num"] = _num
