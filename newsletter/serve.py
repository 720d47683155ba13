"""Web apps on one small ASGI stack (Starlette + uvicorn): the live preview of an issue.

The preview re-renders when the issue, newsletter.toml or a template changes (checked by
modification times when the page polls), shows errors in the page instead of dying, and
reloads the page itself.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter.config import Config, load_config
from newsletter.errors import NewsletterError
from newsletter.render import fill, preview_value, render_issue

_RELOAD = """<script>
(function () {
  var seen = %s;
  setInterval(function () {
    fetch("/__version").then(function (r) { return r.text(); }).then(function (v) {
      if (v !== seen) { location.reload(); }
    }).catch(function () {});
  }, 700);
})();
</script>"""


class Preview:
    """Renders on demand; keeps the last result until a watched file changes."""

    def __init__(self, issue: Path, config_path: Path) -> None:
        self.issue = issue
        self.config_path = config_path
        self.version = ""
        self.html = ""
        self.text = ""

    def watched(self, config: Config | None) -> list[Path]:
        files = [self.issue, self.config_path]
        for folder in config.template_dirs() if config else []:
            files.extend(sorted(folder.rglob("*.j2")))
        return files

    def current_version(self, config: Config | None = None) -> str:
        stamps = []
        for path in self.watched(config):
            try:
                stat = os.stat(path)
                stamps.append(f"{stat.st_mtime_ns}:{stat.st_size}")
            except OSError:
                stamps.append("missing")
        return str(hash(tuple(stamps)))

    def refresh(self) -> str:
        try:
            config = load_config(explicit=self.config_path)
        except NewsletterError as exc:
            config = None
            error: NewsletterError | None = exc
        version = self.current_version(config)
        if version == self.version:
            return version
        self.version = version
        if config is not None:
            error = self._render(config)
        if error is not None:
            self.html = _error_page(str(error))
            self.text = f"error:\n{error}\n"
        return version

    def _render(self, config: Config) -> NewsletterError | None:
        try:
            rendered = render_issue(self.issue, config)
        except NewsletterError as exc:
            return exc
        value = preview_value(config.newsletter.base_url)
        self.html = fill(rendered.html, value, html=True)
        self.text = fill(rendered.text, value, html=False)
        return None


def _error_page(message: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Preview error</title></head>"
        "<body style='font-family: sans-serif; margin: 2em'><h1>The issue does not render</h1>"
        f"<pre style='white-space: pre-wrap; color: #8b0000'>{html.escape(message)}</pre>"
        "<p>Fix the file and save: this page reloads by itself.</p></body></html>"
    )


def preview_app(issue: Path, config: Config) -> Starlette:
    preview = Preview(issue, config.path)

    def page(request: Request) -> Response:
        version = preview.refresh()
        script = _RELOAD % repr(version).replace("'", '"')
        body = preview.html
        body = body.replace("</body>", script + "</body>") if "</body>" in body else body + script
        return HTMLResponse(body)

    def text(request: Request) -> Response:
        preview.refresh()
        return PlainTextResponse(preview.text)

    def version(request: Request) -> Response:
        return PlainTextResponse(preview.refresh())

    routes: list[Route] = [
        Route("/", page),
        Route("/text", text),
        Route("/__version", version),
    ]
    return Starlette(routes=routes)


def run_preview(issue: Path, config: Config, *, port: int) -> None:
    import uvicorn

    uvicorn.run(preview_app(issue, config), host="127.0.0.1", port=port, log_level="warning")
