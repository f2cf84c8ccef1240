"""Who this host is, and the names every part of the fleet derives from it."""

from __future__ import annotations

from bbbcore.imds import InstanceIdentity

Identity = InstanceIdentity
"""The instance as IMDS describes it (one type for the client and every consumer)."""


class NameTemplateError(ValueError):
    """A name template refers to a field that does not exist."""


def _fill(template: str, **fields: str) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise NameTemplateError(f"template {template!r}: {exc}") from None


def fqdn(template: str, identity: Identity, domain: str) -> str:
    """The host's DNS name, ``{instance_id}.{domain}`` by default."""
    name = _fill(
        template,
        instance_id=identity.instance_id,
        domain=domain,
        region=identity.region,
        availability_zone=identity.availability_zone,
    )
    return name.rstrip(".").lower()


def server_url(template: str, host_fqdn: str, identity: Identity) -> str:
    """The URL the host registers as in Scalelite, ``https://{fqdn}/bigbluebutton/api/``."""
    return _fill(template, fqdn=host_fqdn, instance_id=identity.instance_id)
