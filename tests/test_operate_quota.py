"""Per-user storage quotas (issue 21): over quota, delivery is refused with QuotaExceeded —
a local Send fails with it, and across domains the receiving server rejects that recipient
and the sending server bounces the message with the reason. A quota below what the user
keeps is accepted and only stops new mail; the user sees their usage in `wsemail list`.
Real servers on loopback, the real binary."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from operate_helpers import one_line_failure
from stores import cli_sees_store, on_store
from test_federation import Federation, fed  # noqa: F401 -- fed: a fixture

from wsemail.client import admin
from wsemail.client.attachments import Attachments
from wsemail.client.drafts import Drafts
from wsemail.protocol.drafts import SavedDraft
from wsemail.protocol.errors import QuotaExceeded

from conftest import Cli, Running, inbox, start_server, wait_for, wsemail_binary


@pytest.fixture
def server(tmp_path: Path, store_url: str) -> Iterator[Running]:
    """conftest's server, on each store for the tests marked both_stores (with the plug-ins
    that run on it)."""
    running = start_server(tmp_path / "server", **on_store(store_url))
    cli_sees_store(running)
    yield running
    running.stop()


def user_command(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`wsemail user …` straight on a (running) server's data dir."""
    return subprocess.run(
        [wsemail_binary(), "user", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_over_quota_the_receiving_domain_refuses_and_the_sender_gets_the_bounce(
    fed: Federation,  # noqa: F811
) -> None:
    b_dir = fed.b.config.data_dir
    done = user_command("quota", "bob@b.test", "100", data_dir=b_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "bob@b.test: 100 B (own quota), 0 B used"

    alice = fed.a.client("alice@a.test")
    alice.send(["bob@b.test", "carol@b.test"], "Big", "x" * 300)
    wait_for(lambda: inbox(fed.a, "alice@a.test") == ["Undeliverable: Big"], "the bounce")
    assert inbox(fed.b, "carol@b.test") == ["Big"]  # only bob is over quota
    assert inbox(fed.b, "bob@b.test") == []  # nothing stored for him
    notice = alice.retrieve(alice.list_headers().headers[0].id)
    assert notice.sender == "mailer-daemon@a.test"
    assert "could not be delivered to: bob@b.test" in notice.body
    assert "bob@b.test's mailbox is full (storage quota reached)" in notice.body
    assert "carol@b.test" not in notice.body.splitlines()[0]
    assert fed.a.count("SELECT count(*) FROM queue") == 0  # bounced once, not retried

    alice.send(["bob@b.test"], "Small", "fits")  # 9 bytes of 100: delivered
    wait_for(lambda: inbox(fed.b, "bob@b.test") == ["Small"], "the small one")
    refusals = admin.status(fed.b.client("admin@b.test"))["rates"]["refusals"]
    assert refusals["total"] == 1


@pytest.mark.both_stores
def test_a_quota_below_usage_is_accepted_and_only_blocks_new_mail(
    server: Running, cli: Cli
) -> None:
    alice = server.client("alice@localhost")
    for n in range(2):
        alice.send(["bob@localhost"], f"Kept {n}", "x" * 40)
    set_low = cli("admin", "quota", "bob@localhost", "10", user="admin@localhost")
    assert set_low.stdout.strip() == (
        "bob@localhost: 10 B (own quota), 92 B used — over quota: new mail is refused"
    )

    stored = server.stored()
    sent = cli("send", "--to", "bob@localhost", "--subject", "Refused", check=False, input="hi\n")
    line = one_line_failure(sent, 4)
    assert "bob@localhost's mailbox is full (storage quota reached)" in line
    with pytest.raises(QuotaExceeded) as refused:
        alice.send(["bob@localhost", "carol@localhost"], "Refused too", "hi")
    assert refused.value.status == 413
    assert server.stored()[0] == stored[0]  # no copy anywhere, not even alice's sent one

    bob = server.client("bob@localhost")
    headers = bob.list_headers().headers  # reading goes on
    assert [h.subject for h in headers] == ["Kept 1", "Kept 0"]
    assert bob.retrieve(headers[0].id).body == "x" * 40
    listed = cli("list", user="bob@localhost").stdout.splitlines()
    assert (
        listed[-1] == "storage: 92 B of 10 B used (920%) — over quota: new mail to you is refused"
    )
    assert all(
        "storage" not in line
        for line in cli("list", "--json", user="bob@localhost").stdout.splitlines()
    )

    usage = cli("admin", "users", "--usage", user="admin@localhost").stdout.splitlines()
    [bob_row] = [row for row in usage if row.startswith("bob@localhost")]
    assert "(own quota)" in bob_row and "OVER QUOTA" in bob_row
    rows = [
        json.loads(r)
        for r in cli("admin", "users", "--json", user="admin@localhost").stdout.splitlines()
    ]
    by_address = {r["address"]: r for r in rows}
    assert by_address["bob@localhost"]["used"] == 92 and by_address["bob@localhost"]["limit"] == 10
    assert by_address["alice@localhost"]["override"] is False
    assert by_address["alice@localhost"]["limit"] == server.config.quota_per_user_bytes

    cleared = cli("admin", "quota", "bob@localhost", "default", user="admin@localhost").stdout
    assert "(server default)" in cleared
    alice.send(["bob@localhost"], "Welcome back", "hi")
    assert "Welcome back" in inbox(server, "bob@localhost")
    listed = cli("list", user="bob@localhost").stdout.splitlines()
    assert listed[-1].startswith("storage: ") and "over quota" not in listed[-1]


@pytest.mark.both_stores
def test_quota_commands_refuse_bad_input_in_one_line(server: Running, cli: Cli) -> None:
    bad_size = one_line_failure(
        cli("admin", "quota", "bob@localhost", "lots", user="admin@localhost", check=False), 2
    )
    assert "not a size" in bad_size
    nobody = one_line_failure(
        cli("admin", "quota", "nobody@localhost", "1G", user="admin@localhost", check=False), 4
    )
    assert "no such user" in nobody
    data_dir = server.config.data_dir
    assert "no such user" in one_line_failure(
        user_command("quota", "nobody@localhost", "1G", data_dir=data_dir), 1
    )
    assert "not a size" in one_line_failure(
        user_command("quota", "bob@localhost", "5 bananas", data_dir=data_dir), 2
    )
    assert server.count("SELECT count(*) FROM operate_quotas") == 0  # nothing set
    # the command works on the store the server runs on ([store] url on PostgreSQL)
    done = user_command("quota", "bob@localhost", "100", data_dir=data_dir)
    assert done.stdout.strip() == "bob@localhost: 100 B (own quota), 0 B used", done.stderr
    usage = admin.storage_usage(server.client("bob@localhost"))
    assert usage is not None and usage.limit == 100
    assert user_command("quota", "bob@localhost", "default", data_dir=data_dir).returncode == 0
    assert server.count("SELECT count(*) FROM operate_quotas") == 0
    assert server.client("bob@localhost").list_headers().headers == []  # still answers


@pytest.mark.both_stores
def test_usage_follows_deliveries_and_final_deletes(server: Running) -> None:
    """The totals the quota check reads (kept by the operate component's triggers) agree
    with the mailboxes after deliveries, a move to Trash and a final delete."""
    alice, bob = server.client("alice@localhost"), server.client("bob@localhost")
    for n in range(3):
        alice.send(["bob@localhost"], f"Size {n}", "y" * (10 * (n + 1)))

    def used() -> tuple[int, int]:
        usage = admin.storage_usage(bob)
        assert usage is not None
        counted = server.count(
            "SELECT coalesce(sum(size), 0) FROM messages WHERE owner='bob@localhost'"
        )
        assert usage.message_bytes == counted
        return usage.messages, usage.used

    assert used() == (3, 6 + 10 + 6 + 20 + 6 + 30)
    first = bob.list_headers().headers[-1].id  # "Size 0": 16 bytes
    assert bob.delete(first) == "trashed"
    assert used() == (3, 78)  # Trash still counts
    assert bob.delete(first) == "deleted"
    assert used() == (2, 62)


@pytest.mark.both_stores
def test_an_accounts_own_quota_also_bounds_its_drafts_and_uploads(server: Running) -> None:
    admin_client = server.client("admin@localhost")
    admin.set_quota(admin_client, "bob@localhost", "1K")
    drafts = Drafts(server.client("bob@localhost"))
    drafts.save(SavedDraft(subject="fits", body="x" * 500))
    stored = server.stored()
    with pytest.raises(QuotaExceeded, match="mailbox quota: 504 B of 1.0 KB used"):
        drafts.save(SavedDraft(subject="too much", body="y" * 600))
    uploads = Attachments(server.client("bob@localhost"))
    with pytest.raises(QuotaExceeded, match="attachment quota"):
        uploads.upload_stream([b"z" * 2048], 2048, "big.bin")
    assert server.stored()[0] == stored[0]  # nothing more stored
    admin.set_quota(admin_client, "bob@localhost", "default")
    drafts.save(SavedDraft(subject="now it fits", body="y" * 600))
