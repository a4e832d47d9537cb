"""Subnet planning: every AZ gets a private and a public subnet inside the VPC, and none overlap."""

from __future__ import annotations

import ipaddress
import itertools

import pytest

from components.compute.cluster import nat_gateway_count, plan_subnets


@pytest.mark.parametrize(("vpc", "azs", "private_hosts"), [
    ("10.0.0.0/16", 2, 8190),
    ("10.20.0.0/16", 3, 8190),
    ("172.16.0.0/18", 6, 2046),
    ("192.168.0.0/20", 3, 510),
])
def test_subnets_fit_the_vpc_and_do_not_overlap(vpc, azs, private_hosts):
    plan = plan_subnets(vpc, azs)
    assert len(plan.private) == len(plan.public) == azs
    network = ipaddress.ip_network(vpc)
    blocks = [ipaddress.ip_network(b) for b in plan.private + plan.public]
    assert all(b.subnet_of(network) for b in blocks)
    assert not any(a.overlaps(b) for a, b in itertools.combinations(blocks, 2))
    # Pods take VPC addresses: private subnets are the big ones.
    assert all(ipaddress.ip_network(b).num_addresses - 2 == private_hosts for b in plan.private)
    assert all(ipaddress.ip_network(b).num_addresses < ipaddress.ip_network(plan.private[0]).num_addresses
               for b in plan.public)


def test_more_azs_than_the_plan_holds_is_an_error():
    with pytest.raises(ValueError, match="at most 7 AZs"):
        plan_subnets("10.0.0.0/16", 8)


@pytest.mark.parametrize(("mode", "azs", "expected"), [("single", 3, 1), ("perAz", 3, 3), ("perAz", 2, 2)])
def test_nat_gateway_count(mode, azs, expected):
    assert nat_gateway_count(mode, azs) == expected
