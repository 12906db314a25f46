"""The sanitization policy as data: which attribute keys are dropped, hashed, redacted or kept.

A policy is a frozen, validated value loaded from TOML. :mod:`cioguard.privacy.sanitizer` applies
it;
the audit records :attr:`Policy.version` so every delivery names the exact rules it went out
under. The default policy ships as ``cioguard/default_policy.toml``.

Policy file format::

    name = "default"              # [A-Za-z0-9._-], 1-64 chars; first half of the version
    description = "..."           # optional, free text; not part of the version
    mode = "denylist"             # "denylist" (default) or "allowlist"
    allow = []                    # allowlist mode only: the top-level keys that may pass
    detectors = ["card", "ssn", "iban", "phone", "national_id", "secret"]  # omitted = all
    phone_region = "US"           # region for phone numbers written without +/00 (default US)
    qualifiers = ["verified"]     # key endings that make token/stem matches not apply
    booleans_describe = false     # true: a bool under a token/stem match is a fact *about* the
                                  # field (has_password = true) and passes, as qualifiers do

    [[rules]]
    name = "secrets"              # optional; shown by explain(); default "rules[<index>]"
    keys = ["password", "api_key"]
    match = "token"               # "exact", "token" or "stem" (required)
    action = "drop"               # "drop", "hash", "redact" or "keep"
    descend = false               # drop/hash/redact: walk into mappings instead (see below)
    scan = true                   # keep only: false exempts the value from the detectors
    reason = "credentials"        # optional; shown by explain()
    unless = ["passwordless"]     # optional; the rule does not apply to keys containing these
    qualifiers = true             # false: the policy's qualifiers do not exempt keys from it
    keep_inside = []              # descend only: nested keys that pass; others get the action

Key matching. Keys in the data and in the rules are brought to one normal form by
:func:`normalize_key`: camelCase, PascalCase, kebab-case, spaces, dots and upper case all become
snake_case, acronyms stay whole (``userSSN`` -> ``user_ssn``, ``APIKey`` -> ``api_key``) and
digits split from letters (``address1`` -> ``address_1``). Then:

- ``match = "exact"``: the normalized key equals a rule key (``EmailAddress`` = ``email_address``).
- ``match = "stem"``: the rule key, glued (``phone_number`` -> ``phonenumber``), is a substring
  of the glued key: catches ``phonenumber``, ``PassWord`` (``pass_word``), ``APIkey``
  (``ap_ikey``) and ``userpassword``. For long, distinctive words only; ``unless`` lists the
  words that contain a stem but mean something else (``passwordless``, ``secretary``).
- In every kind, ``no``, ``nr``, ``num``, ``nbr``, ``nummer`` and ``numero`` are read as
  ``number`` (``card_no`` = ``card_number``), and keys are folded first (NFKC, accents and
  zero-width characters removed: ``Straße`` = ``strasse``, ``teléfono`` = ``telefono``).
- ``match = "token"``: the rule key's words appear, in order and whole, inside the key's words;
  a plural ``s``/``es`` on a key word is ignored. ``password`` catches ``user_password``,
  ``passwordHash`` and ``passwords`` but not ``passwordless`` (one word); ``api_key`` catches
  ``stripeApiKeys``; ``address`` catches ``addresses``.

When several rules match, an exact match beats a token match (the more specific statement of
intent: ``email_address`` kept exactly is not redacted by the ``address`` token rule), and among
token matches the first rule in the file wins. The same key may not appear in two rules of the
same match kind.

``descend``: a rule for ``address`` should redact ``"1 Main St"`` but not hide the ``city`` and
``zip`` of ``{"street": ..., "city": ..., "zip": ...}``. With ``descend = true`` a mapping under the
key is walked instead of treated as a whole: nested keys another rule matches get that rule,
keys listed in ``keep_inside`` pass, and every other nested key gets the descending rule's
action (an unknown ``{"recipient": "Ada"}`` inside an address is redacted, not kept); scalars,
including those in lists, get the action.

Allowlist mode ("minimum necessary data"): only top-level keys whose normalized form is in
``allow`` pass; rules still apply to them and to everything inside them. A policy whose ``allow``
names a key that a ``drop`` rule would always remove is refused as contradictory.

Loading: :func:`load_policy` (the ``CIOGUARD_POLICY`` path, or the shipped default for None),
:func:`check_policy_file`, :func:`policy_from_toml` and :func:`parse_policy` all raise
:class:`~cioguard.errors.ConfigurationError` naming the source and every bad field or rule
(``rules[2] (cards).action: ... (got 'dorp')``). Policy files hold no personal data, so the
offending setting is quoted.

Note:
    Token matching over-matches on purpose: ``password`` also drops ``password_updated_at``.
    Losing a harmless timestamp is cheaper than leaking a credential; use ``exact`` for words
    that are only sensitive alone (``mobile`` vs ``is_mobile``).
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from cioguard.errors import ConfigurationError
from cioguard.privacy.detectors import DETECTOR_NAMES
from cioguard.privacy.normalize import key_words, normalize_key
from cioguard.privacy.phones import DEFAULT_REGION, known_region
from cioguard.privacy.rules import Action as Action
from cioguard.privacy.rules import KeyForms as KeyForms
from cioguard.privacy.rules import MatchKind as MatchKind
from cioguard.privacy.rules import Rule as Rule
from cioguard.privacy.rules import RuleMatch as RuleMatch
from cioguard.privacy.rules import key_forms as key_forms
from cioguard.privacy.rules import normalized_keys

Mode = Literal["denylist", "allowlist"]

DEFAULT_POLICY_RESOURCE = "default_policy.toml"


class Policy(BaseModel):
    """A validated sanitization policy; immutable and safe to share between threads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: StrictStr = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    description: StrictStr = ""
    mode: Mode = "denylist"
    allow: tuple[StrictStr, ...] = ()
    detectors: tuple[StrictStr, ...] = DETECTOR_NAMES
    phone_region: StrictStr = DEFAULT_REGION
    qualifiers: tuple[StrictStr, ...] = ()
    booleans_describe: StrictBool = False
    rules: tuple[Rule, ...] = ()

    _version: str = PrivateAttr("")
    _exact: dict[str, RuleMatch] = PrivateAttr(default_factory=dict)
    _glued_exact: dict[str, RuleMatch] = PrivateAttr(default_factory=dict)
    _stems: list[tuple[int, str, RuleMatch]] = PrivateAttr(default_factory=list)
    _qualifier_words: tuple[tuple[str, ...], ...] = PrivateAttr(())
    _by_token: dict[str, list[tuple[int, tuple[str, ...], RuleMatch]]] = PrivateAttr(
        default_factory=dict
    )

    @model_validator(mode="before")
    @classmethod
    def _name_rules(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("rules"), list):
            rules = [
                {"name": f"rules[{i}]", **rule} if isinstance(rule, Mapping) else rule
                for i, rule in enumerate(data["rules"])
            ]
            data = {**data, "rules": rules}
        return data

    @field_validator("allow")
    @classmethod
    def _normalize_allow(cls, allow: tuple[str, ...]) -> tuple[str, ...]:
        normalized = [normalize_key(key) for key in allow]
        if "" in normalized:
            raise ValueError("an entry has no letters or digits")
        return tuple(dict.fromkeys(normalized))

    @field_validator("phone_region")
    @classmethod
    def _known_region(cls, region: str) -> str:
        known = known_region(region)
        if known is None:
            raise ValueError(f"{region!r} is not a region code libphonenumber knows (e.g. 'US')")
        return known

    @field_validator("qualifiers")
    @classmethod
    def _normalize_qualifiers(cls, qualifiers: tuple[str, ...]) -> tuple[str, ...]:
        return normalized_keys(qualifiers)

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, detectors: tuple[str, ...]) -> tuple[str, ...]:
        for name in detectors:
            if name not in DETECTOR_NAMES:
                known = ", ".join(DETECTOR_NAMES)
                raise ValueError(f"unknown detector {name!r} (known: {known})")
        if len(set(detectors)) != len(detectors):
            raise ValueError("a detector is listed twice")
        return detectors

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.mode == "allowlist" and not self.allow:
            raise ValueError("allow: allowlist mode needs at least one key")
        if self.mode == "denylist" and self.allow:
            raise ValueError("allow: only used with mode = 'allowlist'")
        seen_names: set[str] = set()
        for index, rule in enumerate(self.rules):
            if rule.name in seen_names:
                raise ValueError(f"{_label(index, rule)}: rule name is used twice")
            seen_names.add(rule.name)
            for key in rule.keys:
                entry = RuleMatch(rule, key, rule.match)
                if rule.match == "exact":
                    if key in self._exact:
                        other = self._exact[key].rule.name
                        raise ValueError(
                            f"{_label(index, rule)}: exact key {key!r} is also in rule {other}"
                        )
                    self._exact[key] = entry
                    self._glued_exact.setdefault("".join(key_words(key)), entry)
                elif rule.match == "stem":
                    self._stems.append((index, "".join(key_words(key)), entry))
                else:
                    words = tuple(key_words(key))
                    bucket = self._by_token.setdefault(words[0], [])
                    if any(e.via == key for _, _, e in bucket):
                        raise ValueError(
                            f"{_label(index, rule)}: token key {key!r} is in two rules"
                        )
                    bucket.append((index, words, entry))
        self._qualifier_words = tuple(tuple(key_words(q)) for q in self.qualifiers)
        for key in self.allow:
            found = self.match(key)
            if found and found.rule.action == "drop" and not found.rule.descend:
                raise ValueError(f"allow: {key!r} is always dropped by rule {found.rule.name}")
        canonical = json.dumps(
            self.model_dump(mode="json", exclude={"description"}),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        self._version = f"{self.name}@{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"
        return self

    @property
    def version(self) -> str:
        """``<name>@<first 12 hex digits of the SHA-256 of the canonical policy JSON>``.

        The same rules in the same order give the same version whatever the spelling of their
        keys (keys are hashed normalized); the description does not count, rule order does
        (the first matching token rule wins).
        """
        return self._version

    def match(self, key: str) -> RuleMatch | None:
        """The rule that governs ``key`` (raw or normalized), or None if no rule matches.

        Order: an exact key (normalized, or glued: ``phonenumber`` = ``phone_number``) beats
        everything; then token and stem rules, the first in the file winning. A token or stem
        match is skipped when one of its rule's ``unless`` phrases is in the key, or when the
        key ends in one of the policy's ``qualifiers`` (``password_last_changed``,
        ``phone_verified_at``: data *about* the field, still scanned by the detectors).
        """
        forms = key_forms(key)
        exact = self._exact.get(forms.normalized) or self._glued_exact.get(forms.glued)
        if exact is not None:
            return exact
        words = list(forms.words)
        qualified = any(
            len(q) < len(words) and tuple(words[-len(q) :]) == q for q in self._qualifier_words
        )
        candidates: list[tuple[int, RuleMatch]] = []
        for start, word in enumerate(words):
            found = self._by_token.get(word, [])
            if word.endswith("s") and len(word) > 3:
                found = found + self._by_token.get(word[:-1], [])
                if word.endswith("es"):
                    found = found + self._by_token.get(word[:-2], [])
            candidates += [(i, e) for i, phrase, e in found if _words_at(words, start, phrase)]
        candidates += [(i, e) for i, stem, e in self._stems if stem in forms.glued]
        for _, entry in sorted(candidates, key=lambda c: c[0]):
            if entry.rule.excepted(forms) or (qualified and entry.rule.qualifiers):
                continue
            return entry
        return None


def _label(index: int, rule: Rule) -> str:
    plain = f"rules[{index}]"
    return plain if rule.name == plain else f"{plain} ({rule.name})"


def _words_at(words: list[str], start: int, phrase: tuple[str, ...]) -> bool:
    if start + len(phrase) > len(words):
        return False
    return all(
        have == want or have == want + "s" or have == want + "es"
        for have, want in zip(words[start : start + len(phrase)], phrase, strict=False)
    )


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        rules = data.get("rules") if isinstance(data, Mapping) else None
        if isinstance(rules, list) and loc[1] < len(rules) and isinstance(rules[loc[1]], Mapping):
            name = rules[loc[1]].get("name")
            if isinstance(name, str):
                text = text.replace(f"rules[{loc[1]}]", f"rules[{loc[1]}] ({name})", 1)
    return text


_MESSAGES = {
    "extra_forbidden": "unknown field",
    "missing": "required field is missing",
    "too_short": "must not be empty",
    "tuple_type": "must be a list",
    "string_pattern_mismatch": "must be 1-64 letters, digits, '.', '_' or '-'",
    "model_type": "must be a table",
}
_SHOW_INPUT = frozenset({"literal_error", "string_pattern_mismatch"})
_SHOW_TYPE = frozenset({"tuple_type", "string_type", "bool_type", "model_type"})


def _describe(error: ValidationError, data: Any) -> str:
    parts: list[str] = []
    for item in error.errors(include_url=False):
        where = _location(tuple(item["loc"]), data)
        message = _MESSAGES.get(item["type"], item["msg"].removeprefix("Value error, "))
        if item["type"] in _SHOW_INPUT:
            message += f" (got {item['input']!r})"
        elif item["type"] in _SHOW_TYPE:
            message += f" (got {type(item['input']).__name__})"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse_policy(data: Mapping[str, Any], *, source: str = "<policy>") -> Policy:
    """A :class:`Policy` from already-parsed TOML/JSON data.

    Raises :class:`ConfigurationError` naming ``source`` and every bad field.
    """
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"policy {source}: {_describe(exc, data)}") from None


def policy_from_toml(text: str, *, source: str = "<policy>") -> Policy:
    """A :class:`Policy` from TOML text; errors name ``source`` and the bad field or rule."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"policy {source}: not valid TOML: {exc}") from None
    return parse_policy(data, source=source)


def check_policy_file(path: str | Path) -> Policy:
    """Load and validate the policy file at ``path`` (``CIOGUARD_POLICY``).

    Raises :class:`ConfigurationError` with the file name and the bad field or rule, e.g.
    ``policy /etc/cioguard.toml: rules[2] (cards).action: Input should be ... (got 'dorp')``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"policy {path}: cannot read: {type(exc).__name__}") from None
    return policy_from_toml(text, source=str(path))


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy at ``path`` (``CIOGUARD_POLICY``), or the shipped default when it is None."""
    return default_policy() if path is None else check_policy_file(path)


@cache
def default_policy() -> Policy:
    """The policy shipped in the package (``default_policy.toml``), loaded once."""
    text = (
        resources.files(__package__ or "cioguard")
        .joinpath(DEFAULT_POLICY_RESOURCE)
        .read_text("utf-8")
    )
    return policy_from_toml(text, source=DEFAULT_POLICY_RESOURCE)
