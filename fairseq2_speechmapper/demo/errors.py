from __future__ import annotations


class DemoAssetError(Exception):
    """Raised when a source of the demo assets is missing or unreadable; the
    message is one line naming the file and how to fix it."""
