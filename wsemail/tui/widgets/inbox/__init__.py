"""Widgets of the inbox screen."""
