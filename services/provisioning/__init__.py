"""Phone provisioning: encrypted per-device URLs (`/p/<token>`) and trusted `/p/<instance>/<mac>`."""
