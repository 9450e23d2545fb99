"""The planner without a kernel: observed + desired -> ordered steps; equal -> no steps."""

from __future__ import annotations

import pytest

from netconf.plan import Desired, NetconfError, Observed, plan

D = Desired("eth1", "10.5.6.100/24", "10.5.6.254", 100)


def test_fresh_nic_gets_link_address_routes_rule_in_order() -> None:
    ops = plan(D, Observed(True, False, [("10.9.9.9", 16)]))
    assert [o.kind for o in ops] == ["link_up", "addr_del", "addr_add", "route_replace", "route_replace", "rule_add"]
    assert ops[1].arg("address") == "10.9.9.9"  # foreign address removed


def test_converged_state_plans_nothing() -> None:
    obs = Observed(True, True, [("10.5.6.100", 24)], [("10.5.6.0", 24, None), (None, 0, "10.5.6.254")],
                   [("10.5.6.100", 32, 100, D.priority), (None, 0, 254, 32766)])
    assert plan(D, obs) == []


def test_stale_routes_and_rules_of_our_table_are_removed() -> None:
    obs = Observed(True, True, [("10.5.6.100", 24)], [("10.5.6.0", 24, None), (None, 0, "10.5.6.1")],
                   [("10.5.6.99", 32, 100, D.priority)])
    kinds = [o.kind for o in plan(D, obs)]
    assert kinds == ["route_del", "route_replace", "rule_del", "rule_add"]


def test_missing_interface_is_a_clear_error() -> None:
    with pytest.raises(NetconfError, match="interface eth1 does not exist"):
        plan(D, Observed(False))
