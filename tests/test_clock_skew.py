"""A client whose clock is minutes off (issue 16): it judges signed answers by the server's
clock, learnt from GetSalt, and a Send whose answer it still had to refuse is asked again
with the same MessageId, so the message is stored once. Real server on loopback."""

from __future__ import annotations

import time

import pytest

from wsemail.client.mail import Client
from wsemail.protocol.auth import Credentials, derive_key
from wsemail.protocol.errors import MessageExpired

from conftest import PASSWORD, Running


def skewed(server: Running, behind: float, **options: object) -> Client:
    """alice's client with trust roots (signed answers) and a clock `behind` seconds slow."""
    clock = options.pop("clock", None) or (lambda: time.time() - behind)
    c = Client(
        server.url,
        "alice@localhost",
        **({"password": PASSWORD} | options),  # type: ignore[arg-type]
        trust_roots=[server.config.trust_roots[0]],
        clock=clock,
    )
    server.clients.append(c)
    return c


def copies(server: Running, message_id: str) -> int:
    return server.count(
        f"SELECT count(*) FROM messages WHERE folder='sent' AND message_id='{message_id}'"
    )


@pytest.mark.parametrize("behind", [60, 200, 299, 400])
def test_a_slow_client_clock_sends_once_with_a_verified_answer(
    server: Running, behind: float
) -> None:
    client = skewed(server, behind)
    sent = client.send(["bob@localhost"], "skewed", "hello")
    assert client.answer_check == "verified"
    assert client.clock_offset is not None and abs(client.clock_offset - behind) < 5
    assert copies(server, sent.message_id) == 1
    assert [h.subject for h in client.list_headers("sent").headers] == ["skewed"]


def test_a_client_with_stored_credentials_learns_the_server_clock(server: Running) -> None:
    salt = server.client().get_salt("alice@localhost")
    credentials = Credentials("alice@localhost", derive_key(PASSWORD, salt))
    client = skewed(server, 200, password=None, credentials=credentials)
    sent = client.send(["bob@localhost"], "cached", "key")
    assert client.answer_check == "verified" and copies(server, sent.message_id) == 1


def test_a_stale_answer_to_a_send_is_asked_again_with_the_same_message_id(
    server: Running,
) -> None:
    offset = [0.0]
    client = skewed(server, 0, clock=lambda: time.time() - offset[0])
    client.list_headers()  # learns the server's clock: in step
    assert client.clock_offset is not None and abs(client.clock_offset) < 5
    offset[0] = 200  # this machine's clock jumps back: the next answer looks stale
    sent = client.send(["bob@localhost"], "jumped", "once")
    assert client.answer_check == "verified"
    assert copies(server, sent.message_id) == 1
    assert server.count("SELECT count(*) FROM messages WHERE subject='jumped'") == 2  # a+b


def test_a_stale_answer_to_a_delete_is_not_asked_again(server: Running) -> None:
    offset = [0.0]
    client = skewed(server, 0, clock=lambda: time.time() - offset[0])
    sent = client.send(["bob@localhost"], "to delete", "x")
    offset[0] = 200
    with pytest.raises(MessageExpired, match="stale"):
        client.delete(sent.id)
    # deleted once (moved to Trash), not again: the sent folder no longer holds it
    assert (
        server.count(f"SELECT count(*) FROM messages WHERE id='{sent.id}' AND folder='sent'") == 0
    )
    client.list_headers()  # and the client has learnt the clock again
