"""The limits on what an owner adds to their own mailbox (drafts, imported mail): the
size-limit plug-in's message size, and the `[quota] per_user_bytes` over everything the
user keeps here (messages of every folder, and uploads when the attachments plug-in is
loaded)."""

from __future__ import annotations

from wsemail.core.units import byte_size
from wsemail.protocol.errors import MessageTooLarge, QuotaExceeded
from wsemail.server.attachments import records as attachments
from wsemail.server.mailbox import records
from wsemail.server.operate.records import limit_for
from wsemail.server.pipeline import Environment
from wsemail.server.plugins.size_limit import SizeLimit


def max_message_bytes(env: Environment) -> int | None:
    """The loaded size-limit plug-in's limit (the smallest, if several), or None."""
    limits = [p.max_bytes for p in env.pipeline.sending if isinstance(p, SizeLimit)]
    return min(limits) if limits else None


def check_size(env: Environment, size: int, what: str = "a draft") -> None:
    limit = max_message_bytes(env)
    if limit is not None and size > limit:
        raise MessageTooLarge(f"{what} of {size} bytes exceeds the limit of {limit}")


def used_bytes(env: Environment) -> int:
    """What the caller keeps here: messages, and uploads if the attachments plug-in is on."""
    used = records.mailbox_bytes(env.tx, env.principal)
    if "attachments" in env.pipeline.extensions:
        used += attachments.owner_bytes(env.tx, env.principal)
    return used


def quota_of(env: Environment) -> int:
    """The caller's quota: their own (`wsemail user quota`), else the server's; 0: none."""
    return limit_for(env.tx, env.principal, env.quota_bytes)


def check_quota(env: Environment, adding: int) -> None:
    """QuotaExceeded unless `adding` more bytes fit the caller's quota."""
    quota = quota_of(env)
    if adding <= 0 or quota <= 0:
        return
    used = used_bytes(env)
    if used + adding > quota:
        raise QuotaExceeded(
            f"mailbox quota: {byte_size(used)} of {byte_size(quota)} used, "
            f"{byte_size(adding)} more do not fit"
        )
