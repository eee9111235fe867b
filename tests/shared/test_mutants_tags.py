"""autopilot.tags, where `make mutate` (tools/mutate.py) found behaviour no test pinned down:
every test here fails against the mutant it names (docs/mutation-survivors.md)."""

from __future__ import annotations

import pytest

from autopilot.tags import as_dict

pytestmark = pytest.mark.unit


def test_a_tag_listed_without_a_value_reads_as_the_empty_value() -> None:
    # x_as_dict__mutmut_7, _9, _13: the default "" became None, nothing or "XXXX": a key-only
    # tag (EC2 allows a tag without a value) would read as "None" or "XXXX", a value nobody set.
    tags = [{"Key": "AutoStop"}, {"Key": "Owner", "Value": "bob"}, {"Value": "no key"}]
    assert as_dict(tags) == {"AutoStop": "", "Owner": "bob"}
