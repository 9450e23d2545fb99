"""The HTTPS path router: instance web UI at /<instance>, REST at /<instance>/services, and
applications exposing only a path prefix of one upstream, each on its own port."""
