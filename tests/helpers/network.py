"""A network that drops packets, for the tests of what a download or an API client does offline."""

from __future__ import annotations

import pytest


def unreachable(monkeypatch: pytest.MonkeyPatch, module: object) -> list[object]:
    """Every TCP connection that `module.create_connection` opens times out, as on a network that drops
    packets; the timeout each attempt was given, in order."""
    timeouts: list[object] = []

    def time_out(address: object, timeout: object = None, *args: object, **kwargs: object) -> None:
        timeouts.append(timeout)
        raise TimeoutError(f"connection to {address} timed out")

    monkeypatch.setattr(module, "create_connection", time_out)
    return timeouts
