"""What an API key may do: one list, shared by the API (which checks it) and the store (which keeps it)."""

from __future__ import annotations

import enum


class Scope(enum.StrEnum):
    AGENTS_READ = "agents:read"
    AGENTS_WRITE = "agents:write"
    CALLS_READ = "calls:read"
    CALLS_WRITE = "calls:write"
    NUMBERS_READ = "numbers:read"
    NUMBERS_WRITE = "numbers:write"
    TOOLS_READ = "tools:read"
    TOOLS_WRITE = "tools:write"
    ADMIN = "admin"
    """Implies every other scope."""
