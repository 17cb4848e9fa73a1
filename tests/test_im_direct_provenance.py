"""A direct instant message ("send directly to recipient") carries the sender's signed
request as its record, between two real TLS domains: the reader's client verifies it
(chain to the sender domain's issuing CA and a trusted root, the sender's address, this
recipient) whether it was pushed live or kept in the mailbox, and shows the signed
content; a tampered or misplaced record fails."""

from __future__ import annotations

import base64
import json
import os
import subprocess

import test_im
from test_im import Fed, stored_for

from wsemail.client.im import direct_request
from wsemail.core.provenance import direct_record
from wsemail.protocol.message import Draft
from wsemail.server.store import Tx

from conftest import PASSWORD, Running, wait_for, wsemail_binary

fed = test_im.fed  # the two TLS domains with the IM plug-in


def _set(running: Running, sql: str, *args: object) -> None:
    running.controller.server.store.transact_sync(lambda tx: tx.conn.execute(sql, args))


def _record(running: Running, owner: str) -> bytes:
    def read(tx: Tx) -> bytes:
        row = tx.conn.execute(
            "SELECT signed_xml FROM messages WHERE owner=? AND folder='inbox'", (owner,)
        ).fetchone()
        return bytes(row[0])

    return running.controller.server.store.transact_sync(read)


def test_a_direct_im_kept_in_the_mailbox_is_verified_as_the_senders(fed: Fed) -> None:
    alice = fed.im(fed.a, "alice@a.test")
    kept = alice.send_direct("carol@b.test", "keep it", fed.b.url)
    assert kept.outcomes["carol@b.test"][0] == "mailbox"
    carol = fed.im(fed.b, "carol@b.test").client
    [header] = carol.list_headers().headers
    assert header.instant and header.sender == "alice@a.test"
    proof, message = carol.verify(carol.retrieve(header.id))
    assert (proof.status, proof.signer) == ("verified", "alice@a.test (direct)")
    assert str(proof) == "signed by alice@a.test (direct) ✓"
    assert carol.answer_check == "verified"  # the record rides inside a signed answer
    assert message.body == "keep it" and message.sender == "alice@a.test" and message.instant
    # the server's copy of the text is not what is shown: the verified one is
    _set(fed.b, "UPDATE messages SET body='forged' WHERE owner='carol@b.test'")
    proof, message = carol.verify(carol.retrieve(header.id))
    assert proof.status == "verified" and message.body == "keep it"
    # without trust roots nothing is claimed
    plain = fed.b.client("carol@b.test")
    assert plain.verify(plain.retrieve(header.id))[0].status == "unchecked"


def test_a_live_direct_push_is_verified_the_same_way(fed: Fed) -> None:
    bob = fed.listen(fed.b, "bob@b.test")
    fed.im(fed.a, "alice@a.test").send_direct("bob@b.test", "straight to you", fed.b.url)
    wait_for(lambda: bob.messages(), "the direct push")
    proof, message = fed.im(fed.b, "bob@b.test").verify(bob.messages()[0])
    assert (proof.status, proof.signer) == ("verified", "alice@a.test (direct)")
    assert message.body == "straight to you"


def test_tampered_or_misplaced_direct_records_fail(fed: Fed) -> None:
    alice = fed.im(fed.a, "alice@a.test")
    alice.send_direct("carol@b.test", "for carol only", fed.b.url)
    alice.send("bob@b.test", "a relayed one for bob")
    wait_for(lambda: stored_for(fed.b, "bob@b.test"), "bob's copy")
    carol = fed.im(fed.b, "carol@b.test").client
    bob = fed.im(fed.b, "bob@b.test").client
    [carol_id] = [h.id for h in carol.list_headers().headers]
    [bob_id] = [h.id for h in bob.list_headers().headers]
    record = _record(fed.b, "carol@b.test")
    request = base64.b64decode(record.split(b">", 1)[1].split(b"<", 1)[0])
    # the body changed inside the signed request
    forged = request.replace(b"for carol only", b"for carol ONLY")
    assert forged != request
    tampered = record.replace(base64.b64encode(request), base64.b64encode(forged))
    _set(fed.b, "UPDATE messages SET signed_xml=? WHERE owner='carol@b.test'", tampered)
    proof, message = carol.verify(carol.retrieve(carol_id))
    assert proof.status == "failed" and "FAILED" in str(proof), proof
    assert "digest" in proof.reason.lower() or "signature" in proof.reason.lower(), proof
    # carol's genuine record moved onto bob's message: signed for someone else
    _set(fed.b, "UPDATE messages SET signed_xml=? WHERE owner='bob@b.test'", record)
    proof, _ = bob.verify(bob.retrieve(bob_id))
    assert proof.status == "failed" and "someone else" in proof.reason
    # the record stamped with another date than the server received it: refused too
    _set(fed.b, "UPDATE messages SET signed_xml=? WHERE owner='carol@b.test'", record)
    assert carol.verify(carol.retrieve(carol_id))[0].status == "verified"
    _set(fed.b, "UPDATE messages SET date='2020-01-01T00:00:00Z' WHERE owner='carol@b.test'")
    proof, _ = carol.verify(carol.retrieve(carol_id))
    assert proof.status == "failed" and "another time" in proof.reason


def test_cli_retrieve_shows_the_direct_signer(fed: Fed) -> None:
    fed.im(fed.a, "alice@a.test").send_direct("carol@b.test", "via the CLI", fed.b.url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")},
        "WSEMAIL_SERVER": fed.b.url,
        "WSEMAIL_USER": "carol@b.test",
        "WSEMAIL_PASSWORD": PASSWORD,
        "WSEMAIL_CACERT": str(fed.ca / "root.pem"),
        "WSEMAIL_TLS_NAME": "b.test",
        "WSEMAIL_TRUST_ROOTS": str(fed.ca / "root.pem"),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
        "HOME": str(fed.tmp),
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            [wsemail_binary(), *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    [header] = [json.loads(line) for line in run("list", "--json").splitlines()]
    assert header["instant"] is True
    text = run("retrieve", header["id"])
    assert "Provenance: signed by alice@a.test (direct) ✓" in text
    assert "Sent as: instant message" in text and text.endswith("via the CLI\n")
    [record] = [json.loads(line) for line in run("retrieve", "--json", header["id"]).splitlines()]
    assert record["provenance"] == {
        "status": "verified",
        "signer": "alice@a.test (direct)",
        "reason": "",
    }


def test_a_record_signed_under_an_untrusted_root_or_for_another_server_fails(fed: Fed) -> None:
    """What a dishonest recipient server could put beside a message: a request signed with a
    certificate for alice@a.test from a root the reader does not trust, or alice's genuine
    request addressed to another server."""
    fed.im(fed.a, "alice@a.test").send_direct("carol@b.test", "genuine", fed.b.url)
    carol = fed.im(fed.b, "carol@b.test").client
    [carol_id] = [h.id for h in carol.list_headers().headers]
    genuine = test_im._token(fed, fed.a, "alice@a.test")
    draft = Draft(["carol@b.test"], "Instant message", "genuine")
    cases = {
        "not trusted": direct_request(draft, "b.test", test_im.tmp_root_token(fed, genuine)),
        "another server": direct_request(draft, "c.test", genuine),
    }
    for reason, request in cases.items():
        _set(
            fed.b,
            "UPDATE messages SET signed_xml=? WHERE owner='carol@b.test'",
            direct_record(request),
        )
        proof, message = carol.verify(carol.retrieve(carol_id))
        assert proof.status == "failed" and reason in proof.reason, proof
    assert fed.b.client("bob@b.test").list_headers() is not None  # still serving
