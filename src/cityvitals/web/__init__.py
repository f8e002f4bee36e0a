"""The dashboard: one page of our own HTML/JS/CSS, plus plotly.js from the installed package.

plotly.js is served from the ``plotly`` Python package's bundled file, so the page works
on a closed network and nothing third-party is copied into this repository.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(str(resources.files("cityvitals.web") / "static"))

router = APIRouter(include_in_schema=False)


def plotly_js() -> Path:
    """The plotly.js bundle shipped inside the plotly Python package."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():  # pragma: no cover - a broken plotly install
        raise FileNotFoundError(f"plotly.js not found at {path}; reinstall the plotly package")
    return path


@router.get("/")
def index() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"})


@router.get("/vendor/plotly.min.js")
def plotly_bundle() -> FileResponse:
    return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


def static_files() -> StaticFiles:
    return StaticFiles(directory=STATIC)
