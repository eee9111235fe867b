"""owner_tagger's decisions, pure (no boto3, no clock):

- :mod:`owner_tagger.decide.identity` - who the owner is, from the CloudTrail ``userIdentity``;
- :mod:`owner_tagger.decide.plan` - per resource: tag, keep or unresolved; what a RunInstances
  launch looks like from DescribeInstances and the event; the run's intent.
"""

from owner_tagger.decide.identity import UNRESOLVED_REASONS, Resolution, caller, resolve_owner
from owner_tagger.decide.plan import (
    ASG_TAG,
    ATTACH_WAITS,
    ATTACHMENT_TYPES,
    CREATED_WITHIN,
    Decision,
    Decisions,
    InstanceView,
    Launch,
    Target,
    by_value,
    created_by_the_call,
    decide,
    decide_by_group,
    intent,
    launch,
    waiting,
)

__all__ = [
    "ASG_TAG",
    "ATTACHMENT_TYPES",
    "ATTACH_WAITS",
    "CREATED_WITHIN",
    "UNRESOLVED_REASONS",
    "Decision",
    "Decisions",
    "InstanceView",
    "Launch",
    "Resolution",
    "Target",
    "by_value",
    "caller",
    "created_by_the_call",
    "decide",
    "decide_by_group",
    "intent",
    "launch",
    "resolve_owner",
    "waiting",
]
