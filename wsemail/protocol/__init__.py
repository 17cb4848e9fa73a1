"""In charge of the wire: what every part of wsemail says and checks on it, with no I/O.

- `errors`: the one exception tree and its mapping to SOAP faults.
- `xmlsafe`: the hardened parser, the only gate for untrusted XML.
- `soap`: SOAP 1.2 envelopes, element helpers, faults on the wire.
- `auth`: the salted password MAC (DESIGN.md §4) and timestamps.
- `message`: the message format (drafts, headers, signed message elements).
- `dsig`: XML signatures (signing, and verification with the binding rules).

Nothing here imports the client, the server, the CLI or the TUI.
"""
