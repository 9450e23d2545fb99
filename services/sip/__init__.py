"""The SIP edge relay: sans-IO parser and relay core, asyncio service (see service.py)."""
