"""One rule of a sanitization policy, and the forms a key is compared in.

Split from :mod:`.policy` (which re-exports these names and documents the file format): a
:class:`Rule` is one ``[[rules]]`` table, validated and normalized on load; :class:`KeyForms`
are the normalized, word and glued forms every key is matched in; :class:`RuleMatch` says which
rule matched a key, by which of its keys and how.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    field_validator,
    model_validator,
)

from cioguard.privacy.normalize import key_words, normalize_key

Action = Literal["drop", "hash", "redact", "keep"]
MatchKind = Literal["exact", "token", "stem"]


class KeyForms(NamedTuple):
    """The forms a key is compared in: normalized, its words (``no`` -> ``number``), glued."""

    normalized: str
    words: tuple[str, ...]
    glued: str


def key_forms(key: str) -> KeyForms:
    """``KeyForms`` of a raw or normalized key: ``Phone-No`` -> ``phone_no``, (phone, number),
    ``phonenumber``."""
    norm = normalize_key(key)
    words = tuple(key_words(norm))
    return KeyForms(norm, words, "".join(words))


def normalized_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    """``keys`` normalized (:func:`normalize_key`), duplicates dropped, in order; a key without
    letters or digits is refused."""
    normalized = tuple(dict.fromkeys(normalize_key(key) for key in keys))
    if "" in normalized:
        raise ValueError("an entry has no letters or digits")
    return normalized


class Rule(BaseModel):
    """One rule: keys (normalized on load), how they match and what happens to their values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: StrictStr = ""
    keys: tuple[StrictStr, ...] = Field(min_length=1)
    match: MatchKind
    action: Action
    descend: StrictBool = False
    scan: StrictBool = True
    reason: StrictStr = ""
    unless: tuple[StrictStr, ...] = ()
    qualifiers: StrictBool = True
    keep_inside: tuple[StrictStr, ...] = ()

    @field_validator("keys")
    @classmethod
    def _normalize_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        normalized: list[str] = []
        for key in keys:
            norm = normalize_key(key)
            if not norm:
                raise ValueError(f"key {key!r} has no letters or digits")
            if norm not in normalized:
                normalized.append(norm)
        return tuple(normalized)

    @field_validator("unless", "keep_inside")
    @classmethod
    def _normalize_lists(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        return normalized_keys(keys)

    @model_validator(mode="after")
    def _options_fit_action(self) -> Rule:
        if not self.scan and self.action != "keep":
            raise ValueError("scan = false applies only to action 'keep'")
        if self.descend and self.action == "keep":
            raise ValueError("descend applies only to drop, hash and redact ('keep' descends)")
        if self.keep_inside and not self.descend:
            raise ValueError("keep_inside applies only with descend = true")
        return self

    def excepted(self, forms: KeyForms) -> bool:
        """Whether one of the rule's ``unless`` phrases occurs in the key (glued, anywhere)."""
        return any(phrase.replace("_", "") in forms.glued for phrase in self.unless)

    def keeps_inside(self, forms: KeyForms) -> bool:
        """Whether a nested key under this (descending) rule is one it lets pass."""
        return any(
            forms.normalized == k or forms.glued == k.replace("_", "") for k in self.keep_inside
        )


class RuleMatch(NamedTuple):
    """Which rule matched a key, by which of its keys, and how (``exact`` or ``token``)."""

    rule: Rule
    via: str
    kind: MatchKind
