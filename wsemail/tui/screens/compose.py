"""In charge of writing and sending a message (paper, Figure 7): To and Cc with completion
(contacts, the directory, addresses sent to, past correspondents), subject, body in a
TextArea or in $EDITOR, send.

Delivery options live in `compose_options`: send as an instant message (pushed to the
recipients' live sessions, else kept in their mailbox) and, with it, delete it if it
cannot be delivered live (the server tells the sender) or send it directly to the
recipients' servers (signed with a federated identity); Send Encrypted (end to end to every
recipient's certificate, also signed unless unticked; refused, nothing sent, when this
device has no key or a recipient has no trusted certificate). An encrypted message goes as
mail, so it excludes the instant-message options.

A form from the installed plug-ins (ctrl+f: pick one, fill it in its plug-in's screen)
travels as the message's body, validated by its plug-in; with no recipient it goes to the
route's first approvers (`wsemail.client.forms.workflow.attach_form`, as `wsemail send --form`).

The text is kept as a draft on the server (`wsemail.tui.autosave`): saved every
`autosave_seconds` while it changes (the app's setting), when the app quits and when the
screen is left without discarding; a draft reopened from Drafts continues it, and sending
it (SendDraft) takes it out of Drafts. Not while a form is attached or Send encrypted is
ticked (the server would read the text)."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from textual import work
from textual.app import ComposeResult, SuspendNotSupported
from textual.binding import Binding
from textual.containers import Grid, Horizontal
from textual.message import Message
from textual.widgets import Checkbox, Header, Input, Label, TextArea

from wsemail.client.attachments import Attachments
from wsemail.client.completion import Completer
from wsemail.client.forms import installed_forms, workflow
from wsemail.client.mail import Client
from wsemail.core.forms import FormPlugin
from wsemail.protocol.drafts import SavedDraft
from wsemail.protocol.errors import NotFound, WsemailError
from wsemail.protocol.message import Draft
from wsemail.tui.autosave import AUTOSAVE_SECONDS, Content, DraftKeeper
from wsemail.tui.delivery import Options, send_directly, send_sealed
from wsemail.tui.drafts import ComposeDraft, parse_addresses
from wsemail.tui.feedback import describe
from wsemail.tui.formscreen import FormDraft, FormFillScreen
from wsemail.tui.mailbox import AddressBook
from wsemail.tui.screens.base import Failed, WorkScreen
from wsemail.tui.screens.choose import ChooseScreen
from wsemail.tui.screens.confirm import ConfirmScreen
from wsemail.tui.widgets.compose.address_input import AddressInput
from wsemail.tui.widgets.footer import KeyFooter

NO_FORM = "none — ctrl+f attaches one of your installed forms"
DETACH = "-detach"


def editor_command() -> list[str]:
    return shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")


class ComposeScreen(WorkScreen[bool]):
    """Dismisses with True once the server accepted the message."""

    CSS_PATH = "compose.tcss"
    BINDINGS = [
        Binding("ctrl+s", "send", "Send", priority=True),
        Binding("ctrl+o", "edit_external", "Edit in $EDITOR", priority=True),
        Binding("ctrl+f", "attach_form", "Form"),
        Binding("escape", "cancel", "Cancel"),
    ]

    class Sent(Message):
        """`how` says how it went (encrypted, instant, direct with each outcome)."""

        def __init__(self, how: str, recipients: list[str]) -> None:
            super().__init__()
            self.how = how
            self.recipients = recipients

    class DraftSaved(Message):
        """An autosave finished: `at` is the server's time of it, "" when it failed."""

        def __init__(self, at: str, close: bool = False) -> None:
            super().__init__()
            self.at = at
            self.close = close

    def __init__(self, client: Client, book: AddressBook, draft: ComposeDraft) -> None:
        super().__init__()
        self.client = client
        self.book = book
        self.draft = draft
        self.sending = False
        self.saving = False
        self.form: tuple[FormPlugin, FormDraft] | None = None  # attached: plug-in, filled draft
        # To and Cc complete from contacts, the directory, addresses sent to (one cache)
        self.completer = Completer(client)
        start = Content(", ".join(draft.to), ", ".join(draft.cc), draft.subject, draft.body)
        thread = SavedDraft(in_reply_to=draft.in_reply_to, references=list(draft.references))
        self.keeper = DraftKeeper(client, start, draft.saved, thread=thread)

    def compose(self) -> ComposeResult:
        yield Header()
        with Grid(id="compose-fields"):
            yield Label("To", classes="compose-label")
            yield AddressInput(
                self.book,
                ", ".join(self.draft.to),
                id="compose-to",
                placeholder="bob@example.org, …",
                completer=self.completer,
            )
            yield Label("Cc", classes="compose-label")
            yield AddressInput(
                self.book,
                ", ".join(self.draft.cc),
                id="compose-cc",
                placeholder="",
                completer=self.completer,
            )
            yield Label("Subject", classes="compose-label")
            yield Input(self.draft.subject, id="compose-subject", compact=True)
        yield TextArea(self.draft.body, id="compose-body", soft_wrap=True)
        yield from self.compose_options()
        with Grid(id="compose-attach"):
            yield Label("Files", classes="compose-label")
            yield Input(
                "",
                id="compose-files",
                compact=True,
                placeholder="paths, comma-separated: stay on your server until fetched",
            )
            yield Label("Form", classes="compose-label")
            yield Label(NO_FORM, id="compose-form", markup=False)
        yield KeyFooter()

    def compose_options(self) -> ComposeResult:
        """Delivery options: how it travels, then end-to-end protection."""
        with Horizontal(id="compose-options", classes="compose-options"):
            yield Checkbox("Instant message", id="compose-instant", compact=True)
            yield Checkbox(
                "Delete if undeliverable", id="compose-delete-undeliverable", compact=True
            )
            yield Checkbox("Direct to recipient", id="compose-direct", compact=True)
        with Horizontal(id="compose-security", classes="compose-options"):
            yield Checkbox("Send encrypted", id="compose-encrypt", compact=True)
            yield Checkbox("Also sign", True, id="compose-sign", compact=True, disabled=True)

    def _checked(self, selector: str) -> bool:
        return self.query_one(selector, Checkbox).value

    @property
    def instant(self) -> bool:
        return self._checked("#compose-instant")

    @property
    def delete_if_undeliverable(self) -> bool:
        return self._checked("#compose-delete-undeliverable")

    @property
    def direct(self) -> bool:
        return self._checked("#compose-direct")

    @property
    def encrypt(self) -> bool:
        return self._checked("#compose-encrypt")

    @property
    def sign(self) -> bool:
        return self._checked("#compose-sign")

    def _tick(self, selector: str, value: bool) -> None:
        self.query_one(selector, Checkbox).value = value

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        # "delete if undeliverable" and "direct" only mean something for an instant message;
        # an encrypted message goes as mail
        which, on = event.checkbox.id, event.value
        if which in ("compose-delete-undeliverable", "compose-direct") and on:
            self._tick("#compose-instant", True)
        elif which == "compose-instant":
            if on:
                self._tick("#compose-encrypt", False)
            else:
                self._tick("#compose-delete-undeliverable", False)
                self._tick("#compose-direct", False)
        elif which == "compose-encrypt":
            self.query_one("#compose-sign", Checkbox).disabled = not on
            if on:
                self._tick("#compose-instant", False)

    def on_mount(self) -> None:
        what = "draft" if self.draft.saved is not None else "new message"
        self.sub_title = f"{self.client.username} — {what}"
        if not self.draft.to:
            self.query_one("#compose-to", Input).focus()
        else:
            self.query_one("#compose-body", TextArea).focus()
        seconds = getattr(self.app, "autosave_seconds", AUTOSAVE_SECONDS)
        if seconds > 0:
            self.set_interval(seconds, self._autosave_tick)

    # reading the form ---------------------------------------------------------------------
    def _value(self, selector: str) -> str:
        return self.query_one(selector, Input).value

    @property
    def body(self) -> str:
        return self.query_one("#compose-body", TextArea).text

    @property
    def dirty(self) -> bool:
        """Something not kept yet: text the server does not hold, files, a form."""
        return (
            self.keeper.changed(self.content)
            or bool(self._value("#compose-files").strip())
            or self.form is not None
        )

    # the draft on the server --------------------------------------------------------------
    @property
    def content(self) -> Content:
        return Content(
            self._value("#compose-to"),
            self._value("#compose-cc"),
            self._value("#compose-subject"),
            self.body,
        )

    def _to_keep(self) -> tuple[list[str], list[str], Content] | None:
        """What to save as the draft now, or None: nothing new, a form or Send encrypted
        (not kept on the server), or addresses still being typed."""
        content = self.content
        if self.form is not None or self.encrypt or not self.keeper.changed(content):
            return None
        try:
            return parse_addresses(content.to), parse_addresses(content.cc), content
        except WsemailError:
            return None

    def _autosave_tick(self) -> None:
        if self.sending or self.saving:
            return
        found = self._to_keep()
        if found is not None:
            self.saving = True
            self.autosave(*found)

    @work(thread=True, group="autosave")
    def autosave(self, to: list[str], cc: list[str], content: Content, close: bool = False) -> None:
        try:
            saved = self.keeper.save(to, cc, content)
        except Exception as exc:
            self.fail("Draft not saved", exc)
            self.post_message(self.DraftSaved("", close))
        else:
            self.post_message(self.DraftSaved(saved.saved if saved else "", close))

    def on_compose_screen_draft_saved(self, event: ComposeScreen.DraftSaved) -> None:
        self.saving = False
        if event.at:
            self.sub_title = f"{self.client.username} — draft saved {event.at[11:19]}"
        if event.close:
            if event.at:
                self.notify("Kept in Drafts", title="Draft saved")
            self.dismiss(False)

    def save_before_quit(self) -> None:
        """Blocking (the app runs it in a thread as it quits): save what changed."""
        found = self._to_keep()
        if found is not None:
            self.keeper.save(*found)

    # actions ------------------------------------------------------------------------------
    def action_send(self) -> None:
        if self.sending:
            return
        try:
            to = parse_addresses(self._value("#compose-to"))
            cc = parse_addresses(self._value("#compose-cc"))
        except WsemailError as exc:
            self.notify(describe(exc), title="Cannot send", severity="error")
            return
        if not to and not cc and self.form is None:  # a form goes to its route's first step
            self.notify("add at least one recipient", title="Cannot send", severity="error")
            self.query_one("#compose-to", Input).focus()
            return
        subject = self._value("#compose-subject").strip()
        files = [
            Path(p.strip()).expanduser()
            for p in self._value("#compose-files").split(",")
            if p.strip()
        ]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            self.notify(
                f"no such file: {', '.join(missing)}", title="Cannot send", severity="error"
            )
            self.query_one("#compose-files", Input).focus()
            return
        options = self.options
        refused = options.refusal(bool(files))
        if refused:
            self.notify(refused, title="Cannot send", severity="error")
            return
        self.sending = True
        self.notify("Sending…", timeout=2)
        self.send(to, cc, subject, self.body, files, options, self.form, self.content)

    @property
    def options(self) -> Options:
        return Options(
            instant=self.instant,
            delete_if_undeliverable=self.instant and self.delete_if_undeliverable,
            direct=self.instant and self.direct,
            encrypt=self.encrypt,
            sign=self.sign,
            form=self.form is not None,
        )

    @work(thread=True, group="send")
    def send(
        self,
        to: list[str],
        cc: list[str],
        subject: str,
        body: str,
        files: list[Path],
        options: Options | None = None,
        form: tuple[FormPlugin, FormDraft] | None = None,
        content: Content | None = None,
    ) -> None:
        options = options or Options()
        another_way = True  # form, encrypted or direct: not as the draft
        try:
            if form is not None:
                plugin, filled = form
                draft = workflow.attach_form(
                    Draft(to=to, cc=cc, subject=subject),
                    plugin,
                    filled,
                    sender=self.client.username,
                    server=self.client.server,
                    autofilled=lambda: workflow.autofill(self.client),
                )
                box = Attachments(self.client)
                guids = [box.upload(path).guid for path in files]
                self.client.send(
                    draft.to, draft.subject, draft.body, cc=draft.cc, attachments=guids
                )
                to, cc = draft.to, draft.cc
                how = f"Form sent: {plugin.title or plugin.name}"
                warning = workflow.unreachable_plugin(plugin, filled, self.client.server)
                if warning:
                    how += f" — but {warning}"
            elif options.encrypt:
                send_sealed(self.client, to, cc, subject, body, sign=options.sign, files=files)
                how = "Encrypted message sent" + (", signed" if options.sign else "")
            elif options.direct:
                outcomes = send_directly(
                    self.client,
                    [*to, *cc],
                    body,
                    subject=subject,
                    delete_if_undeliverable=options.delete_if_undeliverable,
                )
                how = "Sent directly: " + "; ".join(str(o) for o in outcomes)
            else:
                box = Attachments(self.client)
                guids = [box.upload(path).guid for path in files]  # on-demand: uploaded first
                instant, dropped = options.instant, options.delete_if_undeliverable
                typed = content or Content(", ".join(to), ", ".join(cc), subject, body)
                final = replace(typed, subject=subject, body=body)
                # a draft on the server is sent as itself (SendDraft: it leaves Drafts)
                as_draft = self.keeper.send(
                    to, cc, final, guids, instant=instant, delete_if_undeliverable=dropped
                )
                if as_draft is None:
                    self.client.send(
                        to,
                        subject,
                        body,
                        cc=cc,
                        attachments=guids,
                        instant=instant,
                        delete_if_undeliverable=dropped,
                        in_reply_to=self.draft.in_reply_to,
                        references=list(self.draft.references),
                    )
                    self._mark_answered()
                how = "Instant message sent" if options.instant else "Message sent"
                another_way = False
            if another_way:  # the draft it was (if any) is done with
                try:
                    self.keeper.discard()
                except Exception as exc:
                    how += f" — its draft stays in Drafts ({describe(exc)})"
        except Exception as exc:
            self.fail("Not sent", exc)
        else:
            self.post_message(self.Sent(how, [*to, *cc]))

    def _mark_answered(self) -> None:
        """(A worker.) A reply sent without a server draft: flag what it answers (SendDraft
        does it on the server)."""
        if self.draft.answers is None or self.draft.in_reply_to is None:
            return
        try:
            self.client.set_flags([self.draft.answers], answered=True, seen=True)
        except NotFound:
            pass  # deleted meanwhile: the reply went all the same

    def on_failed(self, event: Failed) -> None:
        # WorkScreen.on_failed (run after this one: Textual walks the MRO) shows the error
        self.sending = False

    def on_compose_screen_sent(self, event: ComposeScreen.Sent) -> None:
        self.book.add(event.recipients)
        self.completer.learn(event.recipients)
        self.notify(f"Sent to {', '.join(event.recipients)}", title=event.how)
        self.dismiss(True)

    # forms --------------------------------------------------------------------------------
    def action_attach_form(self) -> None:
        """Pick an installed form plug-in (or none), then fill it in its screen."""
        plugins = {plugin.name: plugin for plugin in installed_forms()}
        if not plugins and self.form is None:
            self.notify(
                "no form plug-ins are installed (wsemail forms install)", severity="warning"
            )
            return
        choices = [(name, plugin.title or name) for name, plugin in plugins.items()]
        if self.form is not None:
            choices.append((DETACH, "No form (take it off this message)"))

        def chosen(name: str | None) -> None:
            if name == DETACH:
                self._attached(None)
            elif name in plugins:
                self._fill(plugins[name])

        if len(choices) == 1 and self.form is None:
            self._fill(next(iter(plugins.values())))
        else:
            self.app.push_screen(ChooseScreen("Attach which form?", choices), chosen)

    def _fill(self, plugin: FormPlugin) -> None:
        before = self.form[1] if self.form is not None and self.form[0] is plugin else None

        def filled(draft: FormDraft | None) -> None:
            if draft is not None:
                self._attached((plugin, draft))

        self.app.push_screen(FormFillScreen(plugin, before, client=self.client), filled)

    def _attached(self, form: tuple[FormPlugin, FormDraft] | None) -> None:
        self.form = form
        area = self.query_one("#compose-body", TextArea)
        area.read_only = form is not None  # the form is the message's body
        label = self.query_one("#compose-form", Label)
        if form is None:
            label.update(NO_FORM)
            return
        plugin = form[0]
        label.update(f"{plugin.title or plugin.name} — it is the message's body; ctrl+f edits")
        self.notify(f"{plugin.title or plugin.name} attached", title="Form")

    def action_cancel(self) -> None:
        """Leave: nothing typed, gone; else Discard (the server's draft too) or keep it in
        Drafts (saved now, if the addresses can be read)."""
        if not self.dirty:
            if self.keeper.draft_id is not None:
                self.notify("Kept in Drafts", title="Draft")
            self.dismiss(False)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.discard()
                return
            found = self._to_keep()
            if found is None:
                if self.keeper.changed(self.content) and self.keeper.draft_id is None:
                    self.notify("not kept: nothing to keep, or addresses that cannot be read")
                self.dismiss(False)
                return
            self.saving = True
            self.autosave(*found, close=True)

        question = "Discard this draft? (No keeps it in Drafts)"
        self.app.push_screen(ConfirmScreen(question, yes="Discard"), answered)

    @work(thread=True, group="autosave")
    def discard(self) -> None:
        try:
            self.keeper.discard()
        except Exception as exc:
            self.fail("The draft stays in Drafts", exc)
        self.post_message(self.DraftSaved("", close=True))

    def action_edit_external(self) -> None:
        """Edit the body in $VISUAL / $EDITOR while the app is suspended."""
        area = self.query_one("#compose-body", TextArea)
        with tempfile.TemporaryDirectory(prefix="wsemail-") as folder:
            path = Path(folder) / "draft.txt"
            path.write_text(area.text, encoding="utf-8")
            try:
                with self.app.suspend():
                    code = subprocess.run([*editor_command(), str(path)], check=False).returncode
            except SuspendNotSupported:
                self.notify("this terminal cannot run an editor", severity="error")
                return
            except OSError as exc:
                self.notify(f"cannot start the editor: {exc}", severity="error")
                return
            if code != 0:
                self.notify(f"the editor exited with {code}; body unchanged", severity="warning")
                return
            area.text = path.read_text(encoding="utf-8")
