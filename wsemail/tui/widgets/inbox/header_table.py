"""In charge of showing a folder's headers as a table and of saying when the user nears its
end (so the screen can fetch the next page from the server)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable

from wsemail.protocol.message import MessageHeader
from wsemail.tui.mailbox import format_date, format_size, markers

# column key, label, width (None: takes the rest of the width)
COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("markers", "", 4),
    ("sender", "From", 24),
    ("subject", "Subject", None),
    ("date", "Date", 16),
    ("size", "Size", 5),
)
NEAR_END_ROWS = 5
RECIPIENT_FOLDERS = ("sent", "Drafts")  # the second column shows To and Cc
MIN_SUBJECT = 12


class HeaderTable(DataTable[Text | str]):
    """Rows keyed by message id; posts NearEnd when the cursor or scroll nears the bottom."""

    class NearEnd(Message):
        """The user is within a few rows of the last loaded header."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self._headers: list[MessageHeader] = []
        self._columns_width = -1
        self._folder = "inbox"

    def set_folder(self, folder: str) -> None:
        """In "sent" and "Drafts" the second column shows recipients, not the sender."""
        if folder != self._folder:
            self._folder = folder
            self._columns_width = -1  # relabel the column on the next rebuild

    # data ---------------------------------------------------------------------------------
    @property
    def selected_id(self) -> str | None:
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return key.value

    def show(self, headers: Sequence[MessageHeader]) -> None:
        """Show exactly `headers`, keeping the cursor on the same message when it remains."""
        keep = self.selected_id
        self._headers = list(headers)
        self._rebuild(keep)

    def _rebuild(self, keep: str | None) -> None:
        self._ensure_columns()
        self.clear()
        for header in self._headers:
            self.add_row(*self._cells(header), key=header.id)
        if keep is not None and keep in {h.id for h in self._headers}:
            self.move_cursor(row=self.get_row_index(keep), animate=False)

    def append(self, headers: Sequence[MessageHeader]) -> None:
        """Add older headers at the bottom without disturbing the cursor."""
        for header in headers:
            self._headers.append(header)
            self.add_row(*self._cells(header), key=header.id)

    def _cells(self, header: MessageHeader) -> list[Text | str]:
        style = "bold" if not header.seen else ""
        who = header.sender
        if self._folder in RECIPIENT_FOLDERS:
            who = ", ".join([*header.to, *header.cc])
        return [
            Text(markers(header), style="bold"),
            Text(who, style=style, overflow="ellipsis", no_wrap=True),
            Text(header.subject, style=style, overflow="ellipsis", no_wrap=True),
            format_date(header.date),
            Text(format_size(header.size), justify="right"),
        ]

    # layout -------------------------------------------------------------------------------
    def _subject_width(self) -> int:
        fixed = sum(width or 0 for _, _, width in COLUMNS)
        padding = 2 * self.cell_padding * len(COLUMNS)
        scrollbar = self.styles.scrollbar_size_vertical
        # before its first layout the table has no size yet: take the terminal's width (it
        # fills it), so the first page is not laid out twice; a resize corrects any guess
        width = self.size.width or self.app.size.width
        return max(MIN_SUBJECT, width - fixed - padding - scrollbar)

    def _ensure_columns(self) -> None:
        width = self._subject_width()
        if width == self._columns_width and self.columns:
            return
        self._columns_width = width
        self.clear(columns=True)
        for key, label, fixed in COLUMNS:
            if key == "sender" and self._folder in RECIPIENT_FOLDERS:
                label = "To"
            self.add_column(label, width=fixed or width, key=key)

    def on_resize(self) -> None:
        if self._subject_width() != self._columns_width:
            self._rebuild(self.selected_id)

    # paging -------------------------------------------------------------------------------
    def watch_cursor_coordinate(self, old: Coordinate, new: Coordinate) -> None:
        super().watch_cursor_coordinate(old, new)
        self.check_near_end()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self.check_near_end()

    @property
    def near_end(self) -> bool:
        """The cursor, or the bottom of the view, is within a few rows of the last row."""
        if not self.row_count:
            return True
        last = self.row_count - NEAR_END_ROWS
        visible_bottom = int(self.scroll_y) + self.scrollable_content_region.height
        return self.cursor_row >= last or visible_bottom >= last

    def check_near_end(self) -> None:
        if self.near_end:
            self.post_message(self.NearEnd())
