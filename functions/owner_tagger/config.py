"""owner_tagger's configuration, from the environment the template sets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from autopilot.config import CommonConfig, ConfigError, env_str

# EC2 tag keys: 1-128 characters (letters, digits, spaces, + - = . _ : / @), not starting with aws:.
_TAG_KEY = re.compile(r"^[\w\s+\-=.:/@]{1,128}$")


@dataclass(frozen=True)
class OwnerTaggerConfig:
    common: CommonConfig
    owner_tag_key: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OwnerTaggerConfig:
        key = env_str("OWNER_TAG_KEY", env)
        if not _TAG_KEY.match(key) or key.lower().startswith("aws:"):
            raise ConfigError(f"environment variable OWNER_TAG_KEY={key!r} is not a valid EC2 tag key")
        return cls(common=CommonConfig.from_env(env), owner_tag_key=key)
