"""Phone provisioning: encrypted per-device URLs (`/p/<token>`) and trusted `/p/<instance>/<mac>`.

The package's public face for code outside the service (the `proxyd provisioning-url` command, the
manager): how a phone's URL is made. The service itself and its routing table stay internal."""

from services.provisioning.token import normalize_mac, provisioning_url, trusted_url

__all__ = ["normalize_mac", "provisioning_url", "trusted_url"]
