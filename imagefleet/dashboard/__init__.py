"""The operator and client dashboard served at /ui.

The page is plain HTML, CSS and JavaScript modules in `static/` (no build step, nothing loaded
from the internet); the orchestrator serves them (`orchestrator/routes_ui.py`) beside the
one read-only aggregate it needs, `GET /v1/overview` (`metrics.py` computes it, pure).
"""
