"""Code shared by bbbnode and bbbscaler: BBB and Scalelite clients, AWS, settings, logs."""

__version__ = "0.1.0"
