"""owner_tagger's own configuration: none beyond the product-wide settings.

The owner tag key it reads and writes is product-wide (``OwnerTagKey`` -> ``OWNER_TAG_KEY``,
validated by :class:`autopilot.config.CommonConfig`, read as ``ctx.common.owner_tag_key``), and
so are the topic and dry run. This frozen, empty dataclass is what ``Automation.config`` builds;
a setting of its own would be a field here, read from the environment in :meth:`from_env`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    """owner_tagger's settings (none of its own)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        return cls()
