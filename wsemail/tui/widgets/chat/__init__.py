"""Widgets of the conversation screen."""
