"""Router rules: versioned data that says how questions are sent to domains.

A rules file is JSON:

    {"version": 1, "fallback": "general",
     "domains": {"law": {"priority": 30, "threshold": 0.35, "exemplars": ["...", ...]}, ...}}

Rules are part of a snapshot and change only through a tested proposal, so
they are immutable once loaded: a change builds a new `RouterRules` with a new
version. The defaults ship in `twinloop/routing/data/default_rules.json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from types import MappingProxyType
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from twinloop.errors import InvalidRequestError

DATA_DIR = "data"
DEFAULT_RULES_FILE = "default_rules.json"

DomainName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
Exemplar = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]


class InvalidRouterRulesError(InvalidRequestError):
    """A rules document that cannot be used (bad JSON, missing or out-of-range fields)."""


class DomainRule(BaseModel):
    """How one domain is recognised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    exemplars: tuple[Exemplar, ...] = Field(
        min_length=1, description="Typical questions of the domain; a question is compared to each."
    )
    threshold: float = Field(
        ge=-1.0,
        le=1.0,
        description="Least cosine score for the domain to be a candidate at all.",
    )
    priority: int = Field(
        default=0, description="Breaks ties between equal scores: the higher priority wins."
    )


class RouterRules(BaseModel):
    """Every domain's rule, the fallback domain, and the rules' version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1, description="Bumped by every accepted change.")
    fallback: DomainName = Field(
        default="general", description="Served when no domain reaches its threshold."
    )
    domains: Mapping[DomainName, DomainRule] = Field(
        min_length=1, description="Domain name to rule; JSON object order is kept."
    )

    @field_validator("domains", mode="after")
    @classmethod
    def _read_only(cls, value: Mapping[str, DomainRule]) -> Mapping[str, DomainRule]:
        return MappingProxyType(dict(value))

    @field_serializer("domains")
    def _plain_dict(self, value: Mapping[str, DomainRule]) -> dict[str, DomainRule]:
        return dict(value)

    @model_validator(mode="after")
    def _consistent(self) -> RouterRules:
        if self.fallback not in self.domains:
            raise ValueError(
                f"fallback {self.fallback!r} is not one of the domains {sorted(self.domains)}"
            )
        seen: dict[str, str] = {}
        for name, rule in self.domains.items():
            for exemplar in rule.exemplars:
                key = exemplar.casefold()
                other = seen.setdefault(key, name)
                if other != name:
                    raise ValueError(
                        f"exemplar {exemplar!r} is listed under both {other!r} and {name!r}"
                    )
        return self

    @classmethod
    def from_json(cls, text: str | bytes) -> RouterRules:
        """Parse and validate a rules document; raises `InvalidRouterRulesError`."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(document)'}: {err['msg']}"
                for err in e.errors(include_url=False)
            )
            raise InvalidRouterRulesError(f"invalid router rules: {problems}") from e

    @classmethod
    def load(cls, path: str | Path) -> RouterRules:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise InvalidRouterRulesError(f"cannot read router rules {path}: {e}") from e
        return cls.from_json(text)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def default_rules() -> RouterRules:
    """The rules shipped with twinloop (law, med, fin, general)."""
    text = (
        files("twinloop.routing").joinpath(DATA_DIR, DEFAULT_RULES_FILE).read_text(encoding="utf-8")
    )
    return RouterRules.from_json(text)
