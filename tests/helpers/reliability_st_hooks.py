"""Schemathesis hooks for tests/integration/test_reliability_service.py (loaded by `st run` via
SCHEMATHESIS_HOOKS).

One custom check: every error answer of the service is a JSON object with a non-empty "error" message.
"""

from __future__ import annotations

import json

import schemathesis


@schemathesis.check
def error_is_json_with_message(ctx, response, case):  # the signature schemathesis calls
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"error answered as {content_type!r}"
    body = json.loads(response.content)
    message = body.get("error") if isinstance(body, dict) else None
    assert isinstance(message, str) and message.strip(), f"error body without a message: {body!r}"
    return None
