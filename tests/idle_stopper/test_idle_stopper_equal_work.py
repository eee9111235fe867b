"""Issue 22's equal-work comparison at test size: half the fleet idle, the cap lifted (1,000),
the real handler in moto with quiet or busy metrics per instance (bench/idle_stopper_equal_work.py,
docs/benchmarks-idle-equal-work.md). Cloud Custodian made 2,003 requests for the 1,000-instance
fleet; idle_stopper made 1,009 before (one attribute read and one CreateTags per stop)."""

from __future__ import annotations

import pytest

from bench.idle_stopper_equal_work import run

pytestmark = pytest.mark.unit  # moto runs inside the bench's own sandbox


def test_a_thousand_instances_half_idle_take_at_most_twenty_requests_and_stop_the_idle_half() -> None:
    result = run(1000)
    assert result.stopped == result.fleet.idle, "not the same 500 stopped"
    assert result.calls == result.minimum
    assert result.total <= 20 and result.calls["ec2.CreateTags"] == 1
    assert "ec2.DescribeInstanceAttribute" not in result.calls


def test_stop_protected_instances_are_untouched_at_one_call_each() -> None:
    result = run(200, protected_share=0.01)
    assert len(result.fleet.protected) == 2
    assert not result.stopped & result.fleet.protected, "a stop-protected instance was stopped"
    assert result.stopped == result.fleet.idle - result.fleet.protected
    assert result.calls == result.minimum and result.calls["ec2.StopInstances"] == 1 + 2
