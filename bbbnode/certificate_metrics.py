"""The host certificate's Prometheus series (bbbnode_certificate_*), for either ``tls.mode``.

A module of its own so that a host serving the fleet certificate loads no ACME code.
"""

from __future__ import annotations

import datetime as dt

from prometheus_client import CollectorRegistry, Counter, Gauge

UPDATE_ERROR_REASONS = ("read", "invalid", "install")


class CertificateMetrics:
    """The host certificate's series, on bbbnode's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.expiry = Gauge(
            "bbbnode_certificate_expiry_timestamp_seconds",
            "When the certificate installed for nginx and coturn expires (epoch seconds; "
            "NaN until one is installed).",
            registry=registry,
        )
        self.expiry.set(float("nan"))
        self.rate_limited_until = Gauge(
            "bbbnode_certificate_rate_limited_until_timestamp_seconds",
            "tls.mode host: while the CA rate-limits this host's orders, the time bbbnode waits "
            "for before ordering again (epoch seconds); 0 otherwise.",
            registry=registry,
        )
        self.update_errors = Counter(
            "bbbnode_certificate_update_errors",
            "tls.mode fleet: new versions of the fleet certificate not installed, by reason "
            "(read, invalid, install); the installed certificate stays.",
            ["reason"],
            registry=registry,
        )
        for reason in UPDATE_ERROR_REASONS:
            self.update_errors.labels(reason)

    def installed(self, not_after: dt.datetime) -> None:
        """A certificate valid until ``not_after`` is now the one served."""
        self.expiry.set(not_after.timestamp())
        self.rate_limited_until.set(0)

    def rate_limited(self, until: dt.datetime) -> None:
        self.rate_limited_until.set(until.timestamp())
