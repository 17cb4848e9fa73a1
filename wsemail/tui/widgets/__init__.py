"""Widgets of the mail client, grouped by the screen whose data they show. They never call
the network: they post Textual messages and the screens do the work."""
