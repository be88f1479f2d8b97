"""/docs and /redoc render without internet: every asset they load comes from the orchestrator."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imagefleet.config import Settings
from imagefleet.orchestrator.app import create_app

REFERENCE = re.compile(r"""(?:src|href|url)\s*[:=]\s*["']([^"']+)["']""")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/docs.db")
    with TestClient(create_app(settings, run_duties=False)) as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_page_loads_everything_from_the_orchestrator(api: TestClient, page: str) -> None:
    response = api.get(page)
    assert response.status_code == 200
    html = response.text
    assert "http://" not in html and "https://" not in html and "//" + "cdn" not in html
    references = REFERENCE.findall(html)
    assert "/openapi.json" in references
    assets = [ref for ref in references if ref != "/openapi.json"]
    assert assets, html
    for ref in assets:
        assert ref.startswith("/docs-assets/"), ref
        asset = api.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 1000, ref
    assert api.get("/openapi.json").json()["info"]["title"] == "imagefleet"


def test_only_known_assets_are_served(api: TestClient) -> None:
    assert api.get("/docs-assets/..%2F..%2Fpyproject.toml").status_code == 404
    assert api.get("/docs-assets/core.py").status_code == 404
