"""The upload API and the page on loopback, for `vsr serve --web-port` (default 8080).

Same `vsr.web.api.handle` as the Lambda, same backend on the local AWS (moto): the presigned URLs point at
the local S3 endpoint, so the browser really PUTs the file there and S3 notifies ingest as on AWS. There is no
sign-in locally: every request is the one local user (`LOCAL_USER`), whose uploads live under users/local/.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from vsr.logs import get_logger
from vsr.settings import Settings
from vsr.web.api import ApiConfig, Request, Response
from vsr.web.backend import AwsBackend
from vsr.web.lambda_api import serve_request

log = get_logger(__name__)

LOCAL_USER = "local"
DEFAULT_WEB_PORT = 8080
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


def static_file(name: str) -> bytes:
    return resources.files("vsr.web").joinpath("static", name).read_bytes()


def local_config(
    settings: Settings, input_bucket: str, work_bucket: str, table: str, tiers: tuple[str, ...] | None = None
) -> ApiConfig:
    return ApiConfig(
        input_bucket=input_bucket,
        records_bucket=work_bucket,
        table=table,
        kms_key_id="",  # no KMS locally: SSE-KMS with the bucket's default key, as moto accepts it
        max_input_bytes=settings.limits.max_input_bytes,
        enabled_tiers=tiers or settings.enabled_tiers(),
        api=settings.api,
    )


def page_config(s3_endpoint: str) -> dict[str, Any]:
    """What the page reads from /config.json: where the API is and how to sign in (locally: not at all)."""
    return {"api_base": "", "auth": None, "user": LOCAL_USER, "s3_endpoint": s3_endpoint}


def security_headers(s3_endpoint: str) -> dict[str, str]:
    """The page talks to itself and to S3 (uploads, the preview, the download), nothing else."""
    policy = (
        f"default-src 'self'; connect-src 'self' {s3_endpoint}; img-src 'self' data: {s3_endpoint}; "
        f"media-src 'self' {s3_endpoint}; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


class LocalWeb:
    """A threaded HTTP server on host:port (port 0: a free one) until `stop()`."""

    def __init__(self, config: ApiConfig, s3_endpoint: str, host: str = "127.0.0.1", port: int = DEFAULT_WEB_PORT):
        self.config = config
        self.s3_endpoint = s3_endpoint.rstrip("/")
        self.backend = AwsBackend()
        web = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "vsr-web"

            def log_message(self, format: str, *args: Any) -> None:  # structlog instead of stderr lines
                return

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in security_headers(web.s3_endpoint).items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self, response: Response) -> None:
                self._send(response.status, response.json().encode("utf-8"), "application/json; charset=utf-8")

            def _dispatch(self) -> None:
                parts = urlsplit(self.path)
                if parts.path.startswith("/api/") or parts.path == "/api":
                    self._api(parts.path, parts.query)
                elif self.command in ("GET", "HEAD") and parts.path == "/config.json":
                    self._send(200, json.dumps(page_config(web.s3_endpoint)).encode(), "application/json")
                elif self.command in ("GET", "HEAD") and parts.path in STATIC_FILES:
                    name, content_type = STATIC_FILES[parts.path]
                    self._send(200, static_file(name), content_type)
                else:
                    self._send(404, b"not found\n", "text/plain; charset=utf-8")

            def _api(self, path: str, query: str) -> None:
                limit = web.config.api.max_body_bytes
                length = int(self.headers.get("Content-Length") or 0)
                if length > limit:
                    message = f"the request body is {length} bytes; the limit is {limit}"
                    self._json(Response(413, {"error": {"code": "body_too_large", "message": message}}))
                    self.close_connection = True
                    return
                body = self.rfile.read(length) if length else None
                request = Request(
                    method=self.command,
                    path=path,
                    user=LOCAL_USER,
                    query=dict(parse_qsl(query, keep_blank_values=True)),
                    body=body,
                )
                self._json(serve_request(request, web.config, web.backend))

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="vsr-web", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> LocalWeb:
        self._thread.start()
        log.info("web.started", url=self.url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
