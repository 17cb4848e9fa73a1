"""One domain's server: docs/ARCHITECTURE.md draws its rooms."""

from __future__ import annotations

from wsemail.server import uvicorn_lazy

uvicorn_lazy.defer()  # before any module of the server imports uvicorn
