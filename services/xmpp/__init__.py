"""XMPP passthrough (5222 STARTTLS by stream `to`, 5223 Direct TLS by SNI), never terminated."""
