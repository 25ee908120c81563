"""The Jinja2 environment (autoescape forced on), the page response with its security headers,
error pages, and versioned URLs of the files under /static/."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from service.api import SECURITY_HEADERS, STATUSES
from service.formatting import branch, duration, first_line, stage_title, when
from trainhook.builds import STAGES, TERMINAL_BUILD

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
# Without JavaScript, a page showing a build in flight reloads itself this often.
REFRESH_SECONDS = 3
# The page scripts, in load order (helpers first); the only scripts a page ever runs.
SCRIPTS = ("common.js", "actions.js", "app.js")


@cache
def static_url(name: str) -> str:
    """`/static/<name>?v=<content hash>`: a new file is a new URL, so browsers may cache long."""
    digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    return f"/static/{name}?v={digest}"


env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    # Forced on for every template, whatever its file name: all page values come from payloads.
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters.update(
    branch=branch, first_line=first_line, duration=duration, when=when, stage_title=stage_title
)
env.globals.update(
    STATUSES=STATUSES,
    STAGES=STAGES,
    TERMINAL=TERMINAL_BUILD,
    REFRESH_SECONDS=REFRESH_SECONDS,
    static_url=static_url,
    SCRIPTS=SCRIPTS,
)


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a template with the security headers every page carries."""
    html = env.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def error_page(status_code: int, title: str, message: str) -> HTMLResponse:
    response = render("error.html", status_code, title=title, message=message)
    if status_code == 503:
        response.headers["Retry-After"] = "5"
    return response


def unavailable() -> HTMLResponse:
    return error_page(503, "Database unavailable", "The build database cannot be reached.")


class Static(StaticFiles):
    """/static/: the page's script and stylesheet, with nosniff and a long cache lifetime
    (every URL carries the file's content hash, see `static_url`)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        if response.status_code == 200 and b"v=" in scope.get("query_string", b""):
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def static_files() -> Static:
    return Static(directory=STATIC_DIR)
