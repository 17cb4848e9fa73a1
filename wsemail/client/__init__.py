"""In charge of the user's side of wsemail, headless (the CLI and the TUI sit on it):

- `mail`: `Client`, the mail client (SOAP over httpx, the salted password MAC, signed answers).
- `attachments`: on-demand attachments (upload, federated fetch).
- `im`: instant messages, presence, push streams and the party line.
- `usercerts`: the user's own certificate, end-to-end encryption, the certificate directory.
- `forms`: form plug-ins on this device and the routed workflow.
- `contacts`, `directory`, `completion`, `vcard`: personal contacts on the server, the
  address directory, address completion (contacts → directory → sent to), vCard files.
- `httpx_cli`: keeps httpx's command-line tool (click, pygments) from loading with httpx.
- `httpcore_trio`: keeps trio (installed by the test extras) from loading with httpcore.

`Client`, `Page` and `SendResult` are imported from `mail` when first used, so importing
this package (as `wsemail` does, for the two helpers) loads neither httpx nor lxml.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsemail.client import httpcore_trio, httpx_cli
from wsemail.core import standin

if TYPE_CHECKING:
    from wsemail.client.mail import Client, Page, SendResult

httpx_cli.defer()  # before anything imports httpx
httpcore_trio.skip()

__all__ = ["Client", "Page", "SendResult"]


__getattr__ = standin.names_from(__name__, globals(), dict.fromkeys(__all__, "wsemail.client.mail"))
