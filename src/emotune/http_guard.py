"""ASGI middleware in front of the BentoML service: refuse what would otherwise become a 500 or cost memory.

- A body over `limit` bytes gets 413 before it is read (from Content-Length), and a body sent without one
  (chunked) gets 413 as soon as it passes the limit: it is never buffered whole.
- A form body (multipart or urlencoded) that does not parse, and a file field (e.g. /analyze `image`) sent as
  a text value, get 400. BentoML answers both with 500, and would treat a text value as a URL to download.
- Errors that the routing layer answers in plain text (404, 405) are turned into JSON {"error": ...}, so every
  error of the API is JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
BODY_METHODS = ("POST", "PUT", "PATCH")


def error_response(
    message: str, status: int, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The two ASGI messages of a JSON error answer (`headers`: extra ones, e.g. Allow for a 405)."""
    body = json.dumps({"error": message}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


async def send_error(send: Any, message: str, status: int) -> None:
    for part in error_response(message, status):
        await send(part)


class RequestGuard:
    """See the module docstring. `file_fields` maps a route path to the form fields that must be files."""

    def __init__(self, app: Any, limit: int, file_fields: Mapping[str, Sequence[str]] | None = None) -> None:
        self.app, self.limit = app, int(limit)
        self.file_fields = {path: tuple(names) for path, names in (file_fields or {}).items()}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = json_errors(scope, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode("latin-1").strip()
        if length.isdigit() and int(length) > self.limit:
            await send_error(send, f"request body of {int(length):,} bytes; the limit is {self.limit:,}", 413)
            return
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return

        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await send_error(send, f"request body over {self.limit:,} bytes (the limit)", 413)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)

        def replay() -> Any:
            sent = False

            async def receive_again() -> dict[str, Any]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            return receive_again

        media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if media in FORM_TYPES:
            problem = await self.form_problem(scope, replay(), media)
            if problem:
                await send_error(send, problem, 400)
                return
        await self.app(scope, replay(), send)

    async def form_problem(self, scope: Any, receive: Any, media: str) -> str | None:
        """Why the form body cannot be used, or None. Parsed the way BentoML will parse it (Starlette)."""
        from starlette.datastructures import UploadFile
        from starlette.exceptions import HTTPException
        from starlette.formparsers import MultiPartException
        from starlette.requests import Request

        try:
            form = await Request(scope, receive).form()
        except (HTTPException, MultiPartException, ValueError, KeyError) as err:
            detail = getattr(err, "detail", None) or getattr(err, "message", None) or str(err)
            return (
                f"malformed {media} body ({detail}); send a file as a multipart upload (curl -F image=@a.jpg)"
            )
        try:
            for name in self.file_fields.get(scope["path"], ()):
                if any(not isinstance(v, UploadFile) for v in form.getlist(name)):
                    return (
                        f"`{name}` must be a file upload (multipart/form-data: curl -F {name}=@face.jpg), "
                        "not a text value"
                    )
        finally:
            await form.close()
        return None


def error_message(body: bytes) -> str | None:
    """The message of an error body that lacks our {"error": "..."} form (None: it has it)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text or "error"
    if isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"].strip():
        return None
    detail = data.get("detail") if isinstance(data, dict) else None
    return detail if isinstance(detail, str) and detail.strip() else text


def json_errors(scope: Any, send: Any) -> Any:
    """Wrap `send` so every error answer is JSON {"error": ...}: routing's plain-text 404/405 and FastAPI's
    {"detail": ...} are rewritten (an error body is small, so it is held until complete)."""
    held: dict[str, Any] = {}
    parts: list[bytes] = []

    async def send_json_errors(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held.update(message)
            return
        if held and message["type"] == "http.response.body":
            parts.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(parts)
            text = error_message(body)
            if text is None:  # already our form: send it as it was
                await send(held)
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            kept = [
                (k, v) for k, v in held.get("headers") or [] if k not in (b"content-type", b"content-length")
            ]
            for part in error_response(f"{text}: {scope['method']} {scope['path']}", held["status"], kept):
                await send(part)
            return
        await send(message)

    return send_json_errors
