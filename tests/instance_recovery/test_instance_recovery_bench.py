"""The calls of a scheduled run against the API's minimum at test size
(bench/instance_recovery.py, docs/benchmarks-instance-recovery.md): the first run makes one
PutMetricAlarm per opted-in instance and reads each list once; the second changes nothing."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.instance_recovery import run

pytestmark = pytest.mark.unit  # moto runs inside the bench's own sandbox


def test_the_first_run_is_the_minimum_and_the_second_writes_nothing_but_the_claim() -> None:
    result = run(250)  # 125 opted in: the second run reads two pages of alarms
    assert result.first == Counter(result.first_minimum)
    assert result.second == Counter(result.second_minimum)
    assert result.first["cloudwatch.PutMetricAlarm"] == 125
    assert result.second["cloudwatch.DescribeAlarms"] == 2
    assert not {op for op in result.second if op.startswith(("cloudwatch.Put", "cloudwatch.Delete", "sns."))}
