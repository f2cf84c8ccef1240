"""bbbnode: the daemon on every BigBlueButton host (exporter, lifecycle, protection)."""

from bbbcore import __version__

__all__ = ["__version__"]
