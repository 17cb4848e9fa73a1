"""In charge of reading one message: retrieve it, show it with its provenance and its
on-demand attachments, fetch those (progress bar; the SHA-256 from the signed message is
checked before a file is kept), and start a reply, reply-all or forward from it (a reply
names its conversation: In-Reply-To, References), show its whole conversation (t), or
delete it after a confirm dialog.

A message carrying a form shows the form's text rendering (from its plug-in) and where its
approval chain stands; a missing plug-in is fetched with i after a dialog that shows its
verified publisher and hash; A, R and D approve, reject or delegate the workflow step."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import platformdirs
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message as TextualMessage
from textual.widgets import Header, ProgressBar

from wsemail.client.attachments import safe_file_name
from wsemail.client.forms import workflow
from wsemail.client.mail import Client
from wsemail.core.forms.approvals import Chain, Entry
from wsemail.core.provenance import Provenance
from wsemail.protocol.errors import WsemailError
from wsemail.protocol.message import Message
from wsemail.tui import delivery, drafts
from wsemail.tui.formscreen import shown_screen
from wsemail.tui.formview import FormShown, Offer, accept, offer, show_form
from wsemail.tui.mailbox import AddressBook
from wsemail.tui.screens.base import WorkScreen
from wsemail.tui.screens.compose import ComposeScreen
from wsemail.tui.screens.confirm import ConfirmScreen
from wsemail.tui.screens.prompt import PromptScreen
from wsemail.tui.widgets.footer import KeyFooter
from wsemail.tui.widgets.message.message_view import MessageView


def download_dir() -> Path:
    """Where fetched attachments go: WSEMAIL_DOWNLOAD_DIR, else the user's downloads."""
    env = os.environ.get("WSEMAIL_DOWNLOAD_DIR")
    return Path(env) if env else Path(platformdirs.user_downloads_dir())


class MessageScreen(WorkScreen[str | None]):
    """Dismisses with the message's id when it was deleted, else None."""

    CSS_PATH = "message.tcss"
    BINDINGS = [
        Binding("escape,q", "back", "Back"),
        Binding("r", "reply", "Reply"),
        Binding("a", "reply_all", "Reply all"),
        Binding("f", "forward", "Forward"),
        Binding("t", "thread", "Thread", tooltip="the whole conversation"),
        Binding("d,delete", "delete", "Delete"),
        Binding("g", "fetch", "Get files"),
        Binding("i", "install", "Install", tooltip="fetch and install the form's plug-in"),
        # shown in the form's text instead: the footer keeps room for Help at 80 columns
        Binding("A", "act('approve')", "Approve", show=False),
        Binding("R", "act('reject')", "Reject", show=False),
        Binding("D", "delegate", "Delegate", show=False),
        Binding("v", "view_form", "View form", show=False),
        Binding("U", "reveal", "Show unverified", show=False),
    ]
    FORM_ACTIONS = {"install", "act", "delegate", "view_form"}

    class Loaded(TextualMessage):
        def __init__(
            self,
            message: Message,
            proof: Provenance,
            refs: list[delivery.Item],
            form: FormShown | None = None,
            e2e: dict[str, object] | None = None,
        ) -> None:
            super().__init__()
            self.e2e = e2e or {}
            self.message = message
            self.proof = proof
            self.refs = refs
            self.form = form

    class FormChanged(TextualMessage):
        def __init__(self, form: FormShown | None) -> None:
            super().__init__()
            self.form = form

    class Offered(TextualMessage):
        def __init__(self, offered: Offer) -> None:
            super().__init__()
            self.offered = offered

    class Acted(TextualMessage):
        def __init__(self, entry: Entry, chain: Chain, to: list[str]) -> None:
            super().__init__()
            self.entry = entry
            self.chain = chain
            self.to = to

    class Fetched(TextualMessage):
        def __init__(self, paths: list[Path]) -> None:
            super().__init__()
            self.paths = paths

    class Deleted(TextualMessage):
        pass

    def __init__(self, client: Client, book: AddressBook, message_id: str) -> None:
        super().__init__()
        self.client = client
        self.book = book
        self.message_id = message_id
        self.message: Message | None = None
        self.refs: list[delivery.Item] = []
        self.form: FormShown | None = None
        self.proof: Provenance | None = None
        self.reveal = False  # the content of a message whose signature check FAILED
        self.e2e: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield MessageView(id="message")
        yield ProgressBar(id="fetch-progress", show_eta=False)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.sub_title = self.client.username
        self.query_one(MessageView).focus()
        self.retrieve()

    @work(thread=True, group="retrieve")
    def retrieve(self) -> None:
        try:
            # the content shown is what the sending server's signature vouches for
            proof, message = self.client.verify(self.client.retrieve(self.message_id))
            message, e2e = delivery.opened(self.client, message)  # decrypted when sealed
            refs: list[delivery.Item] = []
            if message.attachments or message.signed_xml is None:
                try:
                    refs = delivery.attachments_of(self.client, self.message_id)
                except WsemailError as exc:  # references that cannot be trusted are not shown
                    self.app.call_from_thread(
                        self.notify, f"Attachments not shown: {exc}", severity="warning"
                    )
            form = self._form_of(message)
        except Exception as exc:
            self.fail("Cannot open the message", exc)
        else:
            self.post_message(self.Loaded(message, proof, refs, form, e2e))

    def _form_of(self, message: Message) -> FormShown | None:
        """In a worker: the form the message carries, if any (problems as a warning)."""
        try:
            return show_form(self.client, message)
        except WsemailError as exc:
            self.app.call_from_thread(
                self.notify, f"The form is not shown: {exc}", severity="warning"
            )
            return None

    def on_message_screen_loaded(self, event: MessageScreen.Loaded) -> None:
        self.message = event.message
        self.book.learn([event.message])
        self.refs = event.refs
        self.proof = event.proof
        self.form = event.form
        self.e2e = event.e2e
        self._show()

    def _show(self) -> None:
        if self.message is None:
            return
        form_text = None
        if self.form is not None:
            form_text = self.form.summary()
            keys = ["v view in its form screen"] if self.form.installed else []
            if self.form.may_sign(self.client.username):  # the footer is short at 80 columns
                keys += ["A approve", "R reject", "D delegate"]
            if keys:
                form_text += "\n\nKeys: " + " · ".join(keys)
        self.query_one(MessageView).show(
            self.message,
            self.proof,
            self.refs,
            form_text,
            delivery.e2e_line(self.e2e),
            reveal=self.reveal,
        )
        self.refresh_bindings()

    def action_reveal(self) -> None:
        """Show the content of a message whose signature check FAILED (it stays red)."""
        self.reveal = True
        self._show()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "fetch":
            return bool(self.refs)  # hidden without attachments: the footer is short at 80
        if action not in self.FORM_ACTIONS:
            return True
        if self.form is None:
            return False  # hidden: the message carries no form
        if action == "install":
            return None if self.form.installed else True
        if action == "view_form":
            return True if self.form.installed else None
        return True if self.form.may_sign(self.client.username) else None

    # forms --------------------------------------------------------------------------------
    def action_view_form(self) -> None:
        made = None if self.form is None else shown_screen(self.form)
        if made is None:
            self.notify("This form cannot be shown in its screen", severity="warning")
            return
        self.app.push_screen(made)

    def action_install(self) -> None:
        if self.form is None or self.form.installed:
            return
        self.notify(f"Fetching {self.form.ref.name} {self.form.ref.version}…", timeout=3)
        self.fetch_plugin(self.form)

    @work(thread=True, group="form", exclusive=True)
    def fetch_plugin(self, form: FormShown) -> None:
        try:
            offered = offer(self.client, form.ref)
        except Exception as exc:
            self.fail("The form plug-in cannot be installed", exc)
        else:
            self.post_message(self.Offered(offered))

    def on_message_screen_offered(self, event: MessageScreen.Offered) -> None:
        offered = event.offered
        digest = offered.sha256
        question = (
            f"Install form plug-in {offered.ref.name} {offered.ref.version}?\n\n"
            f"Publisher: {offered.publisher} (signature verified)\n"
            f"SHA-256:   {digest[:32]}\n           {digest[32:]}\n"
            f"From:      {httpx.URL(offered.ref.location).netloc.decode()}"
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self.install_plugin(offered)

        self.app.push_screen(ConfirmScreen(question, yes="Install"), answered)

    @work(thread=True, group="form", exclusive=True)
    def install_plugin(self, offered: Offer) -> None:
        try:
            accept(self.client, offered)
        except Exception as exc:
            self.fail("The form plug-in was not installed", exc)
            return
        self.app.call_from_thread(
            self.notify, f"Installed {offered.ref.name} {offered.ref.version}"
        )
        if self.message is not None:
            self.post_message(self.FormChanged(self._form_of(self.message)))

    def on_message_screen_form_changed(self, event: MessageScreen.FormChanged) -> None:
        self.form = event.form
        self._show()

    def action_act(self, kind: str) -> None:
        if self.form is None or not self.form.may_sign(self.client.username):
            return
        goes = ", ".join(self.form.chain.next_approvers()) if self.form.chain else ""
        verb = "Approve" if kind == "approve" else "Reject"
        question = f"{verb} {self.form.ref.name} ({self.form.chain_note})?"
        if kind == "reject":
            question += f"\nIt goes back to {self.form.doc.sender}."
        elif goes:
            question += "\nIt is signed and sent on."

        def answered(yes: bool | None) -> None:
            if yes:
                self.act(kind, "")

        self.app.push_screen(ConfirmScreen(question, yes=verb), answered)

    def action_delegate(self) -> None:
        if self.form is None or not self.form.may_sign(self.client.username):
            return

        def answered(address: str | None) -> None:
            if address:
                self.act("delegate", address)

        self.app.push_screen(PromptScreen("Delegate this step to:", self.book), answered)

    @work(thread=True, group="form", exclusive=True)
    def act(self, kind: str, delegate: str) -> None:
        try:
            entry, chain, to = workflow.act(self.client, self.message_id, kind, delegate=delegate)
        except Exception as exc:
            self.fail(f"Cannot {kind}", exc)
        else:
            self.post_message(self.Acted(entry, chain, to))

    def on_message_screen_acted(self, event: MessageScreen.Acted) -> None:
        done = {"approve": "Approved", "reject": "Rejected", "delegate": "Delegated"}
        self.notify(
            f"{done[event.entry.kind]}; sent to {', '.join(event.to)} ({event.chain.status})",
            title="Form",
        )
        if self.form is not None:
            self.form.chain = event.chain
            waiting = ", ".join(event.chain.next_approvers())
            self.form.chain_note = event.chain.status + (f" ({waiting})" if waiting else "")
            self._show()

    # actions ------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.dismiss(None)

    def _start(self, make: str) -> None:
        if self.message is None:
            self.notify("the message is still loading", severity="warning")
            return
        me = self.client.username
        if make == "reply":
            draft = drafts.reply(self.message, me)
        elif make == "reply_all":
            draft = drafts.reply(self.message, me, to_all=True)
        else:
            draft = drafts.forward(self.message)
        self.app.push_screen(ComposeScreen(self.client, self.book, draft))

    def action_reply(self) -> None:
        self._start("reply")

    def action_reply_all(self) -> None:
        self._start("reply_all")

    def action_forward(self) -> None:
        self._start("forward")

    def action_thread(self) -> None:
        from wsemail.tui.screens.thread import ThreadScreen  # only when asked for

        self.app.push_screen(ThreadScreen(self.client, self.message_id))

    def action_fetch(self) -> None:
        bar = self.query_one("#fetch-progress", ProgressBar)
        bar.update(total=sum(delivery.wire_size(ref) for ref in self.refs) or 1, progress=0)
        bar.display = True
        self.fetch(download_dir(), bar)

    @work(thread=True, group="fetch", exclusive=True)
    def fetch(self, folder: Path, bar: ProgressBar) -> None:
        done = 0
        saved: list[Path] = []
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for ref in self.refs:

                def progress(have: int, total: int, base: int = done) -> None:
                    self.app.call_from_thread(bar.update, progress=base + have)

                dest = folder / safe_file_name(ref.name)
                saved.append(delivery.fetch_item(self.client, ref, dest, progress))
                done += delivery.wire_size(ref)
        except Exception as exc:
            self.fail("Cannot fetch the attachment", exc)
        self.post_message(self.Fetched(saved))

    def on_message_screen_fetched(self, event: MessageScreen.Fetched) -> None:
        self.query_one("#fetch-progress", ProgressBar).display = False
        for path in event.paths:
            self.notify(f"Saved {path} (SHA-256 checked against the signed message)")
        if self.e2e.get("encrypted") and event.paths:
            self.notify("Decrypted on this device, end to end ✓")

    def action_delete(self) -> None:
        subject = self.message.subject if self.message else ""

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete()

        self.app.push_screen(ConfirmScreen(f"Delete “{subject}”?", yes="Delete"), answered)

    @work(thread=True, group="delete")
    def delete(self) -> None:
        try:
            self.client.delete(self.message_id)
        except Exception as exc:
            self.fail("Cannot delete", exc)
        else:
            self.post_message(self.Deleted())

    def on_message_screen_deleted(self) -> None:
        self.notify("Message deleted")
        self.dismiss(self.message_id)
