"""The error a blocked request answers with."""

from __future__ import annotations

from twinloop.errors import TwinloopError


class UnsafeInputError(TwinloopError):
    """The input screen refused the request: its text attacks the model's instructions.

    422 like any other refused field: the request is well-formed, its content is not served.
    The body names the rule (`rule`) and where it matched.
    """

    status_code = 422

    def __init__(self, *, rule: str, where: str, matched: str) -> None:
        super().__init__(
            f"the input screen refused this request: {where} matches the rule {rule} "
            f"({matched!r}), wording aimed at the model's own instructions; ask without it"
        )
        self.rule = rule
        self.where = where

    @property
    def extra_body(self) -> dict[str, object]:
        return {"rule": self.rule}
