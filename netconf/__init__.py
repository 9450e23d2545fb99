"""netconf: a proxy's own NIC, address, routing table and policy rule, with pyroute2.

desired state -> observed state -> plan -> apply. `plan()` is pure (tested without a kernel);
`kernel.py` is the only module that talks netlink. pyroute2 does not run on uvloop's loop, so
proxyd runs `python -m netconf apply|show|teardown` as a short helper process (JSON in/out).
Needs CAP_NET_ADMIN.
"""
