"""The Textual client (`wsemail tui`): mail now; IM and forms plug in as more screens.

Only this package and `wsemail.cli.tui` may import Textual; the pure helpers here
(`mailbox`, `drafts`, `signin`) do not, so they can be tested and reused headless.
"""
