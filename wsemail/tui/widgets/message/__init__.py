"""Widgets of the message screen."""
