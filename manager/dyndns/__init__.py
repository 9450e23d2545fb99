"""Dynamic DNS (seed 000, "dynamically update DNS"): keep one A/AAAA name pointing at a proxy.

The manager sees each proxy's public address as the source of its heartbeats; when that address
changes (and on first contact) it calls a provider here. Providers touch only A/AAAA records
of exactly the configured name. Credentials are passed in, never logged.
"""
