"""In charge of the folder view (paper, Figure 5): one folder's headers, paged in from the
server as the user nears the end, kept fresh by polling ListHeaders.

/ searches the server (Search: words, from:, to:, subject:, has:attachment, is:unread,
is:flagged, in:FOLDER, before:, after:); the results are paged into the table like a
folder, Enter opens one, Esc returns to the folder; a query the server refuses is a notice
naming why. t shows the folder's conversations instead (ListThreads, `wsemail.tui.
conversations`): Enter or space expands one, Enter on a message opens it.

While it is open (the whole session: other screens stack above it) it also holds an IM push
stream, so instant messages that arrive while the user is elsewhere show as notifications;
m opens a conversation with the selected sender, M with any address. The same stream brings
new mail (issue 18): the terminal bell rings, the folder it went to is read again at once,
and the user's `new_mail_command` (client.toml) runs with the message in its environment,
in a thread of its own; a hook that fails is a notice.

Later, the marker column fills with provenance, attachment, form and IM markers (see
`wsemail.tui.mailbox.markers`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widgets import DataTable, Header, Input, Label

from wsemail.client import session
from wsemail.client.mail import Client, Page, ThreadPage
from wsemail.protocol.errors import NotFound, WsemailError
from wsemail.protocol.message import MessageHeader, normalize_address
from wsemail.tui.conversations import Conversations, is_thread_key
from wsemail.tui.feedback import describe
from wsemail.tui.mailbox import AddressBook, Mailbox
from wsemail.tui.screens.base import Invited, WorkScreen
from wsemail.tui.widgets.footer import KeyFooter
from wsemail.tui.widgets.inbox.header_table import HeaderTable

if TYPE_CHECKING:
    from wsemail.client.admin import StorageUsage
    from wsemail.client.im import Incoming
    from wsemail.client.newmail import HookRunner, NewMail
    from wsemail.protocol.drafts import SavedDraft
    from wsemail.tui.push import PushSession

# What only comes after the first page is imported where it is first needed: the IM push
# stream and new-mail hooks (wsemail.client.im, newmail, partyline, attachments), the storage
# used, drafts and replies (tests/test_layout.py keeps them out of a TUI start).

FOLDER_TITLES = {"inbox": "Inbox", "sent": "Sent"}
DRAFTS = "Drafts"
MESSAGES, THREADS = "messages", "threads"
SEARCH = ""  # the header table's folder while it shows search results
SEARCH_HINT = (
    "search the server: words, from: to: subject: has:attachment is:unread is:flagged "
    "in:FOLDER before:YYYY-MM-DD after:YYYY-MM-DD — Enter searches, Esc goes back"
)


class HookFailed(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class InboxScreen(WorkScreen[None]):
    CSS_PATH = "inbox.tcss"
    # focused as it is composed, so the first page is drawn focused once (a focus given in
    # on_mount arrives after that drawing and restyles and redraws the whole table)
    AUTO_FOCUS = "#headers"
    BINDINGS = [
        Binding("c", "compose", "Compose"),
        Binding("m", "chat", "Chat"),
        Binding("M", "new_chat", "New chat", show=False),
        Binding("d,delete", "delete", "Delete"),
        Binding("i", "folder('inbox')", "Inbox"),
        Binding("s", "folder('sent')", "Sent"),
        Binding("D", "folder('Drafts')", "Drafts", show=False),
        Binding("slash", "search", "Search"),
        Binding("t", "threads", "Threads", tooltip="conversations / messages"),
        Binding("space", "toggle_thread", "Expand", show=False),
        Binding("escape", "leave_search", "Back to the folder", show=False),
        Binding("ctrl+r", "reload", "Reload", show=False),
        Binding("F", "filters", "Filters", show=False),
        Binding("S", "server_status", "Server status", show=False),
        Binding("q", "app.quit", "Quit"),
    ]

    class PageLoaded(Message):
        """`page` is None when the fetch failed (already reported)."""

        def __init__(self, generation: int, page: Page | None) -> None:
            super().__init__()
            self.generation = generation
            self.page = page

    class UsageRead(Message):
        """The storage used, read after a folder's first page is shown."""

        def __init__(self, usage: StorageUsage) -> None:
            super().__init__()
            self.usage = usage

    class Polled(Message):
        def __init__(self, generation: int, page: Page, usage: StorageUsage | None = None) -> None:
            super().__init__()
            self.generation = generation
            self.page = page
            self.usage = usage

    class Deleted(Message):
        def __init__(self, message_id: str) -> None:
            super().__init__()
            self.message_id = message_id

    class DraftOpened(Message):
        """`draft` is None when the row in Drafts is a message, not a draft."""

        def __init__(self, draft: SavedDraft | None, message_id: str) -> None:
            super().__init__()
            self.draft = draft
            self.message_id = message_id

    class ThreadsLoaded(Message):
        """`page` is None when the fetch failed (already reported)."""

        def __init__(self, generation: int, page: ThreadPage | None) -> None:
            super().__init__()
            self.generation = generation
            self.page = page

    class ThreadFetched(Message):
        def __init__(self, generation: int, key: str, headers: list[MessageHeader]) -> None:
            super().__init__()
            self.generation = generation
            self.key = key
            self.headers = headers

    class InstantArrived(Message):
        def __init__(self, item: Incoming) -> None:
            super().__init__()
            self.item = item

    def __init__(
        self,
        client: Client,
        book: AddressBook,
        *,
        first_page: Page | None = None,
        signing_in: bool = False,
        page_size: int = 50,
        poll_seconds: float = 5.0,
        im_notify: bool = True,
    ) -> None:
        """`signing_in`: the app's sign-in with `client` is still under way; the screen
        says so, and shows the inbox when `signed_in` brings its first page (nothing of its
        own works meanwhile)."""
        super().__init__()
        self.im_notify = im_notify
        self.push: PushSession | None = None  # the IM push stream, once the first page is shown
        self.hooks: HookRunner | None = None  # runs the new-mail hook, from the first new mail
        self.client = client
        self.book = book
        self.page_size = page_size
        self.first_page = first_page  # the inbox's, brought by the sign-in: shown at once
        self.poll_seconds = poll_seconds
        self.mailbox = Mailbox()
        self.threads = Conversations()
        self.view = MESSAGES  # or THREADS
        self.search_query: str | None = None  # the table shows this search's results
        self.folder_box: Mailbox | None = None  # the folder as it was before the search
        self.not_searched = 0  # encrypted messages the search could not read
        self.generation = 0
        self.loading = False
        self.polling = False
        self._poll_timer: Timer | None = None
        self.usage: StorageUsage | None = None  # storage used of the quota, when known
        self.opened = not signing_in  # signed in: the folders can be shown
        self.mounted = False

    # layout -------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="inbox-bar"):
            yield Label("", id="folder-label")
            yield Label("", id="inbox-status")
        yield Input(placeholder=SEARCH_HINT, id="filter")
        yield HeaderTable(id="headers")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.mounted = True
        if self.opened:
            self._show_inbox()
        else:
            self._update_status()

    def signed_in(self, client: Client, first_page: Page) -> None:
        """The app's sign-in succeeded, with `client` (another than the screen was made with
        when the sign-in form signed in anew): show its inbox from `first_page`."""
        self.client, self.first_page = client, first_page
        self.opened = True
        if self.mounted:
            self._show_inbox()
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.opened  # before the sign-in: none of the inbox's keys

    def _show_inbox(self) -> None:
        self.sub_title = self.client.username
        first, self.first_page = self.first_page, None
        self._load_folder("inbox", first)
        if self.poll_seconds > 0:
            self._poll_timer = self.set_interval(self.poll_seconds, self._poll_tick)
        if self.im_notify:  # once the first page is drawn: its thread would slow the drawing
            self.call_after_refresh(self.listen)

    def on_unmount(self) -> None:
        if self.push is not None:
            self.push.close()

    @property
    def table(self) -> HeaderTable:
        return self.query_one(HeaderTable)

    @property
    def showing_threads(self) -> bool:
        return self.view == THREADS and self.search_query is None

    def _update_status(self) -> None:
        box = self.mailbox
        title = FOLDER_TITLES.get(box.folder, box.folder)
        if self.search_query is not None:
            title = f"Search: {self.search_query}"
        elif self.view == THREADS:
            title += " · conversations"
        self.query_one("#folder-label", Label).update(title)
        if self.showing_threads:
            parts = [f"{len(self.threads.threads)} conversations loaded"]
            more = self.threads.loaded and self.threads.more
        elif self.search_query is not None:
            parts = [f"{len(box.headers)} found"]
            more = box.loaded and box.more
            if self.not_searched:
                many = "s were" if self.not_searched > 1 else " was"
                parts.append(f"{self.not_searched} encrypted message{many} not searched")
        else:
            parts = [f"{len(box.headers)} loaded"]
            more = box.loaded and box.more
        if more:
            parts.append("more on server")
        if self.loading:
            parts.append("loading…")
        if self.usage is not None:
            parts.append(self.usage.describe())
        if not self.opened:
            parts = [f"Signing in as {self.client.username} …"]
        self.query_one("#inbox-status", Label).update(" · ".join(parts))

    def _show_all(self) -> None:
        if self.showing_threads:
            self.table.show(self.threads.rows())
        else:
            self.table.show(self.mailbox.headers)
        self._update_status()

    def _header(self, message_id: str) -> MessageHeader | None:
        """A loaded header, whichever view shows it."""
        return self.mailbox.get(message_id) or self.threads.get(message_id)

    # loading ------------------------------------------------------------------------------
    def _load_folder(self, folder: str, first: Page | None = None) -> None:
        """Show `folder` from its first page: `first` when given, else asked for."""
        self.generation += 1
        self.search_query, self.folder_box = None, None
        self.mailbox = Mailbox(folder)
        self.threads = Conversations(folder, expanded=self.threads.expanded)
        self.loading = False
        self.table.set_folder(folder)
        self.table.show([])
        if first is None:
            self._load_more()
            return
        self._show_page(first)
        self.call_after_refresh(self.read_usage)  # after the page is drawn

    def _load_more(self) -> None:
        if self.loading:
            return
        if self.showing_threads:
            if self.threads.more:
                self.loading = True
                self._update_status()
                self.fetch_threads(self.threads.folder, self.threads.next_cursor, self.generation)
            return
        if not self.mailbox.more:
            return
        self.loading = True
        self._update_status()
        box = self.mailbox
        self.fetch_page(box.folder, box.next_cursor, self.generation, self.search_query)

    @work(thread=True, group="page")
    def fetch_page(
        self, folder: str, cursor: str | None, generation: int, query: str | None = None
    ) -> None:
        try:
            if query is not None:
                page = self.client.search(query, limit=self.page_size, cursor=cursor)
            else:
                page = self.client.list_headers(folder, limit=self.page_size, cursor=cursor)
        except Exception as exc:
            self.fail("Cannot search" if query is not None else "Cannot list messages", exc)
            self.post_message(self.PageLoaded(generation, None))
        else:
            self.post_message(self.PageLoaded(generation, page))
            if cursor is None and query is None:  # after the page: it shows without waiting
                self._post_usage()

    def _post_usage(self) -> None:
        """In a worker: read the storage used and post it (nothing when it cannot be read)."""
        usage = self._read_usage()
        if usage is not None:
            self.post_message(self.UsageRead(usage))

    @work(thread=True, group="usage")
    def read_usage(self) -> None:
        self._post_usage()

    def _read_usage(self) -> StorageUsage | None:
        """The user's storage against their quota (None when it cannot be read: the
        status bar then shows the last value it had)."""
        from wsemail.client.admin import storage_usage

        try:
            return storage_usage(self.client)
        except Exception:  # the listing itself worked: no notice for the status bar
            return None

    def on_inbox_screen_page_loaded(self, event: InboxScreen.PageLoaded) -> None:
        if event.generation != self.generation:
            return
        self.loading = False
        if event.page is None:
            if self.search_query is not None and not self.mailbox.loaded:
                self.action_leave_search()  # refused (the notice says why): the folder again
                return
            self._update_status()  # keep the cursor: the next scroll or ctrl+r tries again
            return
        self._show_page(event.page)

    def _show_page(self, page: Page) -> None:
        """Add a page of headers below those shown."""
        fresh = self.mailbox.add_page(page)
        if self.search_query is not None:
            self.not_searched = max(self.not_searched, page.encrypted_not_searched)
        self.book.learn(fresh)
        self.table.append(fresh)
        self._update_status()
        self.call_after_refresh(self.table.check_near_end)

    def on_inbox_screen_usage_read(self, event: InboxScreen.UsageRead) -> None:
        self.usage = event.usage
        self._update_status()

    @work(thread=True, group="page")
    def fetch_threads(self, folder: str, cursor: str | None, generation: int) -> None:
        try:
            page = self.client.list_threads(folder, limit=self.page_size, cursor=cursor)
        except Exception as exc:
            self.fail("Cannot list conversations", exc)
            self.post_message(self.ThreadsLoaded(generation, None))
        else:
            self.post_message(self.ThreadsLoaded(generation, page))

    def on_inbox_screen_threads_loaded(self, event: InboxScreen.ThreadsLoaded) -> None:
        if event.generation != self.generation:
            return
        self.loading = False
        if event.page is not None:
            fresh = self.threads.add_page(event.page)
            self.book.learn(h for c in fresh for h in c.headers)
            self._show_all()
            self.call_after_refresh(self.table.check_near_end)
        else:
            self._update_status()

    @on(HeaderTable.NearEnd)
    def _near_end(self) -> None:
        # asked again: rows may have arrived since the widget posted the message
        loaded = self.threads.loaded if self.showing_threads else self.mailbox.loaded
        if loaded and self.table.near_end:
            self._load_more()

    def _poll_tick(self) -> None:
        if self.loading or self.polling or not self.mailbox.loaded or self.search_query:
            return
        self.polling = True
        self.poll(self.mailbox.folder, self.generation)

    @work(thread=True, exclusive=True, group="poll")
    def poll(self, folder: str, generation: int) -> None:
        try:
            page = self.client.list_headers(folder, limit=self.page_size)
        except Exception as exc:
            self.fail("Cannot check for new mail", exc)
            self.post_message(self.Polled(-1, Page([], None)))
        else:
            self.post_message(self.Polled(generation, page, self._read_usage()))

    def on_inbox_screen_polled(self, event: InboxScreen.Polled) -> None:
        self.polling = False
        if event.generation != self.generation:
            return
        if event.usage is not None and event.usage != self.usage:
            self.usage = event.usage
            self._update_status()
        fresh = self.mailbox.merge_newest(event.page)
        if fresh is None:
            self._load_folder(self.mailbox.folder)
            return
        if not fresh:
            return
        self.book.learn(fresh)
        self._show_all()
        if self.mailbox.folder == "inbox":
            count = len(fresh)
            self.notify(f"{count} new message{'s' if count > 1 else ''}", title="New mail")

    def action_server_status(self) -> None:
        """The server status screen (an admin account; others see the refusal there)."""
        from wsemail.tui.screens.admin import AdminStatusScreen  # (imported when first needed)

        self.app.push_screen(AdminStatusScreen(self.client))

    # instant messages ---------------------------------------------------------------------
    def listen(self) -> None:
        """Open the IM push stream (after the first page is drawn), unless gone already."""
        from wsemail.client.im import InstantMessenger
        from wsemail.tui.push import PushSession

        if self.push is None and self.is_attached:
            self.push = PushSession(InstantMessenger(self.client), mail=True)
            self._listen(self.push)

    @work(thread=True, group="listen")
    def _listen(self, push: PushSession) -> None:
        try:
            push.run(lambda item: self.post_message(self.InstantArrived(item)), lambda: None)
        except Exception as exc:
            if not push.closed:
                self.fail("Instant messages are not shown live", exc)

    def on_inbox_screen_instant_arrived(self, event: InboxScreen.InstantArrived) -> None:
        from wsemail.client.newmail import NewMail
        from wsemail.client.partyline import Invitation
        from wsemail.tui.push import notice_text, plain_address

        item = event.item
        screen = self.app.screen
        if item.kind == "mail":
            self._new_mail(NewMail.from_event(item))
            return
        from wsemail.tui.screens.chat import ChatScreen  # (imported when first needed)

        if item.kind == "notice":
            if not isinstance(screen, ChatScreen):  # a chat screen shows its own
                self.notify(notice_text(item), title="Instant message", severity="warning")
            return
        if item.kind != "message":
            return
        invitation = Invitation.parse(item.body, item.sender)
        if invitation is not None:
            self.app.post_message(Invited(invitation))  # the app says how to join
            return
        if isinstance(screen, ChatScreen) and screen.peer == plain_address(item.sender):
            return  # shown in the conversation
        self.notify(f"{item.body[:200]}  (m to answer)", title=f"IM from {item.sender}")

    # new mail -------------------------------------------------------------------------------
    def _new_mail(self, mail: NewMail) -> None:
        from wsemail.client.newmail import HookRunner

        self.app.bell()
        if self.hooks is None:
            self.hooks = HookRunner(self._hook_command, self.client, self._hook_failed)
        self.hooks.submit(mail.header)
        if mail.header.folder == self.mailbox.folder:
            if self.showing_threads and not self.loading:
                self._load_folder(self.mailbox.folder)  # its conversation moves up
            else:
                self._poll_tick()  # shown now, not at the next poll

    def _hook_command(self) -> str:
        """(The hook's thread.) The hook as client.toml says now."""
        return session.load_accounts().hook_for(self.client.server, self.client.username)

    def _hook_failed(self, exc: WsemailError) -> None:
        """(The hook's thread.) A notice, never a crash."""
        self.post_message(HookFailed(describe(exc)))

    def on_hook_failed(self, event: HookFailed) -> None:
        self.notify(event.text, title="New-mail hook", severity="warning", timeout=8)

    def action_chat(self) -> None:
        message_id = self.table.selected_id
        header = self._header(message_id) if message_id is not None else None
        if header is None:
            self.action_new_chat()
            return
        from wsemail.tui.push import plain_address

        peer = header.sender
        if plain_address(peer) == plain_address(self.client.username):
            peer = next(iter([*header.to, *header.cc]), peer)  # own sent mail: its recipient
        from wsemail.tui.screens.chat import ChatScreen

        self.app.push_screen(ChatScreen(self.client, peer))

    def action_new_chat(self) -> None:
        def answered(peer: str | None) -> None:
            if not peer:
                return
            try:
                normalize_address(peer)
            except WsemailError as exc:
                self.notify(describe(exc), title="Cannot chat", severity="error")
                return
            from wsemail.tui.screens.chat import ChatScreen

            self.app.push_screen(ChatScreen(self.client, peer))

        from wsemail.tui.screens.prompt import PromptScreen  # (imported when first needed)

        self.app.push_screen(PromptScreen("Chat with:", self.book), answered)

    # actions ------------------------------------------------------------------------------
    def action_folder(self, folder: str) -> None:
        if folder != self.mailbox.folder or self.search_query is not None:
            self._load_folder(folder)
        self.table.focus()

    def action_reload(self) -> None:
        if self.search_query is not None:
            self._search(self.search_query)
        else:
            self._load_folder(self.mailbox.folder)

    # search -------------------------------------------------------------------------------
    def action_search(self) -> None:
        field = self.query_one("#filter", Input)
        field.display = True
        field.focus()

    @on(Input.Submitted, "#filter")
    def _search_submitted(self, event: Input.Submitted) -> None:
        query = event.value.strip()
        event.input.display = False
        self.table.focus()
        if query:
            self._search(query)
        else:
            self.action_leave_search()

    def _search(self, query: str) -> None:
        """Show the server's answer to `query` instead of the folder (kept for Esc)."""
        self.generation += 1
        if self.search_query is None:
            self.folder_box = self.mailbox
        self.search_query = query
        self.not_searched = 0
        self.mailbox = Mailbox(self.mailbox.folder)
        self.loading = False
        self.table.set_folder(SEARCH)  # results from every folder: the sender column
        self.table.show([])
        self._load_more()

    def action_leave_search(self) -> None:
        """Esc: close the search field; from a search's results, back to the folder."""
        field = self.query_one("#filter", Input)
        if field.display:
            field.display = False
            self.table.focus()
            if self.search_query is None or field.value.strip() != self.search_query:
                return  # a new query was being typed: the table stays as it was
        field.value = ""
        if self.search_query is None:
            return
        box, self.folder_box = self.folder_box, None
        self.search_query = None
        self.generation += 1  # answers still under way are for what was shown before
        self.loading = False
        if box is None or not box.loaded or self.showing_threads:
            self._load_folder(self.mailbox.folder)
            return
        self.mailbox = box
        self.table.set_folder(box.folder)
        self._show_all()
        self.call_after_refresh(self.table.check_near_end)

    # conversations ------------------------------------------------------------------------
    def action_threads(self) -> None:
        """Toggle between the folder's messages and its conversations."""
        self.view = MESSAGES if self.view == THREADS else THREADS
        self.threads.expanded.clear()
        self._load_folder(self.mailbox.folder)
        self.table.focus()

    def action_toggle_thread(self) -> None:
        key = self.table.selected_id
        if key is not None and is_thread_key(key):
            self._toggle(key)

    def _toggle(self, key: str) -> None:
        if self.threads.toggle(key) and self.threads.incomplete(key):
            found = self.threads.find(key)
            if found is not None:
                self.fetch_thread(key, found.latest.id, self.generation)
        self._show_all()

    @work(thread=True, group="thread")
    def fetch_thread(self, key: str, message_id: str, generation: int) -> None:
        """The whole conversation, when the listing holds only its newest messages."""
        try:
            messages = self.client.thread(message_id, peek=True)
        except Exception as exc:
            self.fail("Cannot read the whole conversation", exc)
        else:
            headers = [m for m in messages if m.folder != "Trash"]
            self.post_message(self.ThreadFetched(generation, key, list(headers)))

    def on_inbox_screen_thread_fetched(self, event: InboxScreen.ThreadFetched) -> None:
        if event.generation == self.generation and event.headers:
            self.threads.whole[event.key] = event.headers
            self._show_all()

    def action_filters(self) -> None:
        from wsemail.tui.screens.filters import FiltersScreen

        self.app.push_screen(FiltersScreen(self.client))

    def action_compose(self) -> None:
        from wsemail.tui.drafts import ComposeDraft
        from wsemail.tui.screens.compose import ComposeScreen

        self.app.push_screen(ComposeScreen(self.client, self.book, ComposeDraft()))

    @on(DataTable.RowSelected, "#headers")
    def _open(self, event: DataTable.RowSelected) -> None:
        message_id = event.row_key.value
        if message_id is None:
            return
        if is_thread_key(message_id):
            self._toggle(message_id)
            return
        header = self._header(message_id)
        folder = header.folder if header is not None else self.mailbox.folder
        if folder == DRAFTS:  # a draft opens where it is written
            self.open_draft(message_id)
            return
        self._open_message(message_id)

    def _open_message(self, message_id: str) -> None:
        from wsemail.tui.screens.message import MessageScreen

        self.mailbox.mark_seen(message_id)
        self.threads.mark_seen(message_id)
        self._show_all()
        self.app.push_screen(
            MessageScreen(self.client, self.book, message_id), self._message_closed
        )

    @work(thread=True, group="draft")
    def open_draft(self, draft_id: str) -> None:
        from wsemail.client.drafts import Drafts

        try:
            found = Drafts(self.client).get(draft_id)
        except NotFound:  # a message filed into Drafts (not a draft): shown as one
            self.post_message(self.DraftOpened(None, draft_id))
        except Exception as exc:
            self.fail("Cannot open the draft", exc)
        else:
            self.post_message(self.DraftOpened(found, draft_id))

    def on_inbox_screen_draft_opened(self, event: InboxScreen.DraftOpened) -> None:
        if event.draft is None:
            self._open_message(event.message_id)
            return

        def closed(_: bool | None) -> None:
            if self.mailbox.folder == DRAFTS:
                self._load_folder(DRAFTS)  # sent, changed or discarded

        from wsemail.tui.drafts import reopen
        from wsemail.tui.screens.compose import ComposeScreen

        screen = ComposeScreen(self.client, self.book, reopen(event.draft))
        self.app.push_screen(screen, closed)

    def _message_closed(self, deleted: str | None) -> None:
        if deleted:
            self._remove(deleted)

    def action_delete(self) -> None:
        message_id = self.table.selected_id
        if message_id is None:
            return
        if is_thread_key(message_id):
            self.notify("expand the conversation (Enter) and pick a message", severity="warning")
            return
        header = self._header(message_id)
        subject = header.subject if header else ""

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete(message_id)

        from wsemail.tui.screens.confirm import ConfirmScreen  # (imported when first needed)

        self.app.push_screen(ConfirmScreen(f"Delete “{subject}”?", yes="Delete"), answered)

    @work(thread=True, group="delete")
    def delete(self, message_id: str) -> None:
        try:
            self.client.delete(message_id)
        except Exception as exc:
            self.fail("Cannot delete", exc)
        else:
            self.post_message(self.Deleted(message_id))

    def on_inbox_screen_deleted(self, event: InboxScreen.Deleted) -> None:
        self._remove(event.message_id)
        self.notify("Message deleted")

    def _remove(self, message_id: str) -> None:
        self.mailbox.remove(message_id)
        self.threads.remove(message_id)
        if self.folder_box is not None:
            self.folder_box.remove(message_id)
        self._show_all()
