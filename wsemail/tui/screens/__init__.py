"""Screens of the mail client, one per file. Screens own the network: they call the
client in thread workers and post the results back to themselves as Textual messages."""
