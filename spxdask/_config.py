"""Validation shared by the configuration dataclasses: errors that name the field at fault."""

from __future__ import annotations

from typing import Any


def require(config: Any, ok: bool, name: str, what: str) -> None:
    """Raise ``ValueError("<Config>.<name> <what>, got <value>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{type(config).__name__}.{name} {what}, got {getattr(config, name)!r}")
