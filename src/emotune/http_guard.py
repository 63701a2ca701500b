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
import os
from collections.abc import Callable, Mapping, Sequence
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


class BodyTooLarge(Exception):
    """The request body passed the limit while it was read."""


async def read_body(receive: Any, limit: int) -> bytes | None:
    """The whole request body, never more than `limit` bytes held (BodyTooLarge past it, chunked bodies
    too); None when the client disconnected."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Any) -> Any:
    """An ASGI `receive` that hands the app the body already read, then the client's later messages."""
    sent = False

    async def receive_again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


def announced_length(scope: Any) -> int | None:
    length = dict(scope.get("headers") or []).get(b"content-length", b"").decode("latin-1").strip()
    return int(length) if length.isdigit() else None


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
        length = announced_length(scope)
        if length is not None and length > self.limit:
            await send_error(send, f"request body of {length:,} bytes; the limit is {self.limit:,}", 413)
            return
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return

        try:
            body = await read_body(receive, self.limit)
        except BodyTooLarge:
            await send_error(send, f"request body over {self.limit:,} bytes (the limit)", 413)
            return
        if body is None:
            return  # the client is gone: nothing to answer

        media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if media in FORM_TYPES:
            problem = await self.form_problem(scope, replay(body, receive), media)
            if problem:
                await send_error(send, problem, 400)
                return
        await self.app(scope, replay(body, receive), send)

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


UPLOAD_ROUTE = "/gradio_api/upload"
# Gradio routes that store a posted file and that the page never uses: the screen recorder's video and the
# server functions of components the page does not have.
CLOSED_ROUTES = ("/gradio_api/process_recording", "/gradio_api/component_server")
FORM_FRAMING = 64 * 1024  # multipart headers and boundaries around an upload's bytes


class UploadGuard:
    """ASGI middleware in front of the page (Gradio), for the routes where a client can make it store files.

    - The upload route (`.../gradio_api/upload`) takes pictures only: each file part must pass `check` (e.g.
      emotune.vision.open_image with the byte and pixel limits, which reads headers only; an ImageError
      gives its status, 413 or 415, and message). The body is read into memory, at most `max_file_bytes`
      plus framing, before Gradio sees a byte of it.
    - What the stored uploads of this process hold is bounded: at most `max_total_bytes` and `max_files`
      that still exist (the page deletes a photo once read; Gradio deletes the others after their age, see
      emotune.ui); past either, 429 until space frees up.
    - CLOSED_ROUTES answer 404.
    """

    def __init__(
        self,
        app: Any,
        check: Callable[[bytes], Any],
        max_file_bytes: int,
        max_total_bytes: int,
        max_files: int,
        setting: str = "serve.max_image_bytes",
    ) -> None:
        self.app, self.check, self.setting = app, check, setting
        self.max_file_bytes, self.max_total_bytes = int(max_file_bytes), int(max_total_bytes)
        self.max_files = int(max_files)
        self.stored: dict[str, int] = {}  # path -> bytes, of the uploads this process let through
        self.pending = (0, 0)  # (bytes, files) let through and not stored yet

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "").rstrip("/") if scope["type"] == "http" else ""
        if path.endswith(CLOSED_ROUTES):
            await send_error(send, f"Not Found: {scope['method']} {scope['path']}", 404)
        elif path.endswith(UPLOAD_ROUTE) and scope["method"] == "POST":
            await self.upload(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def upload(self, scope: Any, receive: Any, send: Any) -> None:
        limit = self.max_file_bytes + FORM_FRAMING
        length = announced_length(scope)
        if length is not None and length > limit:
            await send_error(send, f"upload of {length:,} bytes; the limit is {limit:,} ({self.what})", 413)
            return
        try:
            body = await read_body(receive, limit)
        except BodyTooLarge:
            await send_error(send, f"upload over {limit:,} bytes, the limit ({self.what})", 413)
            return
        if body is None:
            return
        sizes, problem = await self.file_sizes(scope, body)
        if problem is not None:
            await send_error(send, *problem)
            return
        problem = self.over_space(sum(sizes), len(sizes))
        if problem is not None:
            await send_error(send, problem, 429)
            return
        self.pending = (self.pending[0] + sum(sizes), self.pending[1] + len(sizes))
        answer: list[bytes] = []
        status = 0

        async def send_keeping_answer(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200:
                answer.append(message.get("body", b""))
            await send(message)

        # The answer (a short JSON list of the stored paths) is read here, so it must come uncompressed.
        headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"accept-encoding"]
        try:
            await self.app({**scope, "headers": headers}, replay(body, receive), send_keeping_answer)
        finally:
            self.pending = (self.pending[0] - sum(sizes), self.pending[1] - len(sizes))
            self.remember(b"".join(answer), sizes)

    @property
    def what(self) -> str:
        return f"{self.setting} + {FORM_FRAMING // 1024} KiB of form framing"

    async def file_sizes(self, scope: Any, body: bytes) -> tuple[list[int], tuple[str, int] | None]:
        """The sizes of the body's file parts, or why it is refused: (message, status)."""
        from starlette.datastructures import Headers, UploadFile
        from starlette.formparsers import MultiPartException, MultiPartParser

        class InMemory(MultiPartParser):
            spool_max_size = len(body) + 1  # never spooled to a temporary file: the body is in memory

        async def stream() -> Any:
            yield body

        try:
            form = await InMemory(Headers(scope=scope), stream(), max_files=100, max_fields=100).parse()
        except (MultiPartException, ValueError, KeyError) as err:
            return [], (f"malformed upload ({getattr(err, 'message', None) or err})", 400)
        sizes = []
        try:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if name != "files":  # Gradio would write it to its folder and never delete it
                        return [], (f"an upload's file parts are named `files`, not `{name}`", 400)
                    data = await value.read()
                    try:
                        self.check(data)
                    except ValueError as err:  # emotune.vision.ImageError: 413 or 415
                        return [], (f"{value.filename or 'upload'}: {err}", getattr(err, "status", 415))
                    sizes.append(len(data))
        finally:
            await form.close()
        return sizes, None

    def over_space(self, size: int, files: int) -> str | None:
        """Why `files` more files of `size` bytes in all would not fit the upload space, or None."""
        self.stored = {path: n for path, n in self.stored.items() if os.path.exists(path)}
        held = sum(self.stored.values()) + self.pending[0]
        count = len(self.stored) + self.pending[1]
        if held + size > self.max_total_bytes or count + files > self.max_files:
            return (
                f"the page's upload space is full ({count} files, {held:,} bytes stored; the limits are "
                f"{self.max_files} files and {self.max_total_bytes:,} bytes, ui.uploads): try again later"
            )
        return None

    def remember(self, answer: bytes, sizes: list[int]) -> None:
        """Gradio answers an upload with the stored paths, in the order of the parts."""
        try:
            paths = json.loads(answer) if answer else []
        except ValueError:
            return
        if isinstance(paths, list):
            self.stored.update(
                (str(path), size) for path, size in zip(paths, sizes, strict=False) if isinstance(path, str)
            )


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


def with_details(body: bytes) -> bytes:
    """BentoML's validation error, {"error": "1 validation error for Input", "detail": [{"loc": ["k"], "msg":
    "..."}]}, with each field and message in "error" too, so the message says which limit was passed."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not (
        isinstance(data, dict) and isinstance(data.get("error"), str) and isinstance(data.get("detail"), list)
    ):
        return body
    found = [
        f"{'.'.join(map(str, d.get('loc') or [])) or 'body'}: {d['msg']}"
        for d in data["detail"]
        if isinstance(d, dict) and isinstance(d.get("msg"), str)
    ]
    if not found:
        return body
    return json.dumps({**data, "error": f"{data['error']}: {'; '.join(found)}"}).encode()


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
            body = with_details(b"".join(parts))
            text = error_message(body)
            if text is None:  # already our form: send it as it was
                held["headers"] = [
                    (k, str(len(body)).encode() if k == b"content-length" else v)
                    for k, v in held.get("headers") or []
                ]
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
