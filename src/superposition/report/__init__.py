"""Self-contained HTML reports of a run."""

import jinja2

# Every page the package renders comes from templates/ beside this file, autoescaped.
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("superposition.report", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
)
