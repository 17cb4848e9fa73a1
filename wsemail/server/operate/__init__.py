"""Operating a server: storage quotas, the admin status, metrics, health (issue 21)."""

from __future__ import annotations

from wsemail.server.operate.plugin import Operate

__all__ = ["Operate"]
