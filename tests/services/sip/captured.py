"""Messages shaped as the third-party clients send them (header order, spelling, parameters
as seen from linphonec 5.1, baresip 1.0 and kamailio 5.6), for unit tests of the relay core.

Addresses are loopback: 127.0.0.2 the phones, 127.0.0.1 pforte (phone side 5060, PBX side 6000)
and, in the all-in-one layout, the PBX on 127.0.0.1:5080.
"""

from __future__ import annotations

INSTANCE = "urn:uuid:5e9a5a3c-7d9b-00f3-9b8e-8b7b3c1c2a10"

#: linphonec's Contact to REGISTER (RFC 5626 instance id, a quoted specs list holding commas)
LINPHONE_CONTACT = (f'<sip:alice@127.0.0.2:5070;transport=udp>;+sip.instance="<{INSTANCE}>";reg-id=1;'
                    '+org.linphone.specs="conference/1.0,ephemeral/1.1,groupchat/1.1,lime"')

LINPHONE_REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK.Zq3xX~vAr;rport\r\n"
    "From: <sip:alice@example.com>;tag=OCXlnvZBp\r\n"
    "To: sip:alice@example.com\r\n"
    "CSeq: 20 REGISTER\r\n"
    "Call-ID: xS0n7hk-Vr\r\n"
    "Max-Forwards: 70\r\n"
    "Supported: replaces, outbound, gruu, path\r\n"
    "Accept: application/sdp\r\n"
    "Accept: text/plain\r\n"
    f"Contact: {LINPHONE_CONTACT}\r\n"
    "Expires: 3600\r\n"
    "User-Agent: Linphone-Desktop/5.1.2 (debian) LinphoneCore/5.1.2\r\n"
    "Content-Length: 0\r\n\r\n").encode()

#: the header parameters kamailio's registrar adds to each binding in its 200 OK (RFC 5627 GRUUs:
#: quoted values with ";" and "=" inside)
KAMAILIO_GRUU = (f';pub-gruu="sip:alice@example.com;gr={INSTANCE}"'
                 ';temp-gruu="sip:tgruu.7hs==jd7vnzga5w7fajsc7-ajd6fabz0f8g5@example.com;gr"')


def kamailio_register_ok(forwarded: bytes) -> bytes:
    """kamailio's 200 OK to a REGISTER it received (`forwarded`, as pforte sent it): its Vias,
    Path and Contacts echoed, each binding with expires and GRUUs."""
    lines = forwarded.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    keep = [ln for ln in lines if ln.split(":")[0] in ("Via", "From", "Call-ID", "CSeq", "Path")]
    to = next(ln for ln in lines if ln.startswith("To:"))
    contacts = [ln.partition(":")[2].strip() for ln in lines if ln.startswith("Contact:")]
    out = ["SIP/2.0 200 OK", *keep, to + ";tag=7b5c1ff1a1b3c4fb0d0e3d0b2e8c4d6f-3a1b"]
    for c in contacts:
        uri, _, params = c.partition(">")
        out.append(f"Contact: {uri}>;expires=3600{params}{KAMAILIO_GRUU}")
    out += ["Server: kamailio (5.6.3 (x86_64/linux))", "Content-Length: 0", "", ""]
    return "\r\n".join(out).encode("latin-1")


#: the 200 OK to REGISTER as it reaches pforte (our Via on top: any token; the scanner tests)
KAMAILIO_REGISTER_OK = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKpf0a1b2c3d4e5f60718293.1a2b3c4d;pf=AbC-_9\r\n"
    "Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK.Zq3xX~vAr;rport=5070;received=127.0.0.2\r\n"
    "From: <sip:alice@example.com>;tag=OCXlnvZBp\r\n"
    "To: sip:alice@example.com;tag=7b5c1ff1a1b3c4fb0d0e3d0b2e8c4d6f-3a1b\r\n"
    "CSeq: 20 REGISTER\r\n"
    "Call-ID: xS0n7hk-Vr\r\n"
    "Path: <sip:AbC-_9@127.0.0.1:6000;transport=udp;lr;ob>\r\n"
    f"Contact: <sip:alice@127.0.0.2:5070;transport=udp;pf-flow=AbC-_9>;expires=3600"
    f';+sip.instance="<{INSTANCE}>";reg-id=1{KAMAILIO_GRUU}\r\n'
    "Server: kamailio (5.6.3 (x86_64/linux))\r\n"
    "Content-Length: 0\r\n\r\n").encode()
