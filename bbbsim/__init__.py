"""bbbsim: the bbbfleet fleet on one machine (emulated hosts, Scalelite, AWS via moto)."""

from bbbcore import __version__

__all__ = ["__version__"]
