"""Apply a :class:`~cioguard.privacy.policy.Policy` to attributes: pure functions, no I/O.

:meth:`Sanitizer.apply` returns a new dict (the input is never mutated) in which:

- each key at any depth (mappings, lists of mappings) is matched against the policy's rules and
  its value dropped, hashed (keyed, :func:`cioguard.privacy.hashing.value_hash`), redacted
  (``[REDACTED]``)
  or kept;
- in allowlist mode, top-level keys not in ``allow`` are dropped first, and rules still apply
  inside the allowed ones;
- every string left (unless a ``keep`` rule with ``scan = false`` says otherwise, as the default
  policy does for ``email``) is run through the policy's detectors, and matches are replaced in
  place (``"card 4111 1111 1111 1111"`` -> ``"card [REDACTED:card]"``); an int that is a valid
  card number becomes ``"[REDACTED:card]"``;
- Customer.io's limits are then checked on the result: attribute names at most 150 UTF-8 bytes,
  at most 300 top-level attributes, each value at most 1000 bytes (a string's UTF-8 bytes, any
  other value's compact JSON). A violation raises :class:`InvalidInputError` naming the
  attribute and the limit, never the value.

Hashing: strings are hashed as they are; other scalars on their JSON form (``true``, ``42``,
``1.5``); mappings and lists under a hashed key are hashed leaf by leaf, keeping their shape,
and ``None`` stays ``None`` (a hash of "no value" would look like a value). Inside a hashed
subtree a nested ``drop`` or ``redact`` rule still applies: rules can only make data stricter.

:meth:`Sanitizer.explain` walks the same way and returns one :class:`Decision` per key (and per
detector hit) with its path, action, rule and reason. Neither decisions nor errors ever contain
a value: values may be personal data; key names and paths are not treated as such.

Input must be JSON data (str, int, float, bool, None, mappings with str keys, lists/tuples);
anything else raises :class:`InvalidTypeError` naming the path and type, and nesting deeper
than ``MAX_DEPTH`` raises :class:`InvalidInputError`: a sanitizer that cannot see inside a
value must not let it through.

Note:
    By default ``apply`` is not idempotent for ``hash`` rules: a second pass hashes the hash.
    A second pass over already-sanitized data (the worker re-checking what the application
    enqueued) should use ``apply(..., rehash=False)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cioguard.errors import ConfigurationError, InvalidInputError, InvalidTypeError
from cioguard.privacy import detectors
from cioguard.privacy.decisions import Decision as Decision
from cioguard.privacy.decisions import DecisionAction as DecisionAction
from cioguard.privacy.decisions import log_spans as _log_spans
from cioguard.privacy.hashing import value_hash
from cioguard.privacy.limits import MAX_ATTRIBUTES as MAX_ATTRIBUTES
from cioguard.privacy.limits import MAX_NAME_BYTES as MAX_NAME_BYTES
from cioguard.privacy.limits import MAX_VALUE_BYTES as MAX_VALUE_BYTES
from cioguard.privacy.limits import check_limits
from cioguard.privacy.phones import known_region
from cioguard.privacy.policy import Policy
from cioguard.privacy.rules import KeyForms, Rule, RuleMatch, key_forms

REDACTED: Final = "[REDACTED]"
MAX_DEPTH: Final = 32

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_SEGMENT = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*+")\]')
_POLICY = "policy"
_KEEP_INSIDE = "policy (keep_inside)"
_BOOLEANS = "policy (booleans_describe)"
_COUNTRY_KEYS = ("country", "country_code", "countryCode", "Country", "CountryCode")
_HASH_SHAPE = re.compile(r"[0-9a-f]{64}")
_KEY_CACHE_SIZE = 4096
_PAIR_NAMES = ("name", "key", "label", "field", "title", "property")


@dataclass(frozen=True, slots=True)
class _Call:
    """Per-call state of one walk: the decision log (explain only) and the string hasher."""

    log: list[Decision] | None
    hash_text: Callable[[str], str]
    region: str | None  # the phone detector's hint, from the profile's country


@dataclass(frozen=True, slots=True)
class _Key:
    match: RuleMatch | None
    forms: KeyForms
    segment: str  # ".name" or '["odd name"]', to append to the parent path


class Sanitizer:
    """Applies one policy with one hash key; build once per process and reuse (it caches keys).

    Note:
        The key cache holds up to 4096 distinct raw key names, then starts over; data with
        unbounded key names (ids as keys) costs a normalization per key but stays correct.
    """

    def __init__(self, policy: Policy, hash_key: bytes) -> None:
        if not isinstance(hash_key, bytes) or not hash_key:
            raise ConfigurationError("the sanitizer's hash key must be non-empty bytes")
        self.policy = policy
        self._hash_key = hash_key
        self._scan = (
            detectors.scanner(policy.detectors, policy.phone_region) if policy.detectors else None
        )
        self._cards_in_ints = "card" in policy.detectors
        self._allow = frozenset(policy.allow) if policy.mode == "allowlist" else None
        self._keys: dict[str, _Key] = {}

    def apply(
        self,
        attributes: Mapping[str, Any],
        *,
        enforce_limits: bool = True,
        rehash: bool = True,
    ) -> dict[str, Any]:
        """The sanitized copy of ``attributes``; checks Customer.io's attribute limits on it.

        ``enforce_limits=False`` skips the person-attribute limits, for event data, which has
        its own (100,000 bytes in total, checked by :mod:`cioguard.producer.validate`).

        ``rehash=False`` is for a second pass over data this sanitizer already produced (the
        worker re-checking what the application enqueued): under a ``hash`` rule, a string
        shaped like a :func:`value_hash` output (64 lowercase hex digits) is left as it is
        instead of hashed again, which makes ``apply`` idempotent.

        Note:
            ``rehash=False`` trusts the shape: an unkeyed SHA-256 of a phone number sent under
            ``phone`` would pass as it is. Use it only on data that went through ``apply`` once.
        """
        if not isinstance(attributes, Mapping):
            raise InvalidTypeError(f"attributes must be a mapping, not {type(attributes).__name__}")
        call = _Call(None, self._hash if rehash else self._hash_once, _region(attributes))
        clean = self._mapping(attributes, "", False, True, 0, call)
        if enforce_limits:
            check_limits(clean)
        return clean

    def explain(self, attributes: Mapping[str, Any]) -> list[Decision]:
        """Every decision :meth:`apply` makes on ``attributes``, in walk order (limits aside)."""
        if not isinstance(attributes, Mapping):
            raise InvalidTypeError(f"attributes must be a mapping, not {type(attributes).__name__}")
        log: list[Decision] = []
        self._mapping(attributes, "", False, True, 0, _Call(log, self._hash, _region(attributes)))
        return log

    def safe_path(self, path: str) -> str:
        """``path`` for an error message: the top-level name, then list positions and keyed
        hashes of the keys (``friends[#1c0f3a9e].age``), never key text past the top level.

        Keys below the top level are data as often as names (``friends["bob@example.com"]``);
        the keyed hash still lets whoever holds the hash key find the key they suspect.
        """
        parts: list[str] = []
        pos = 0
        while pos < len(path):
            found = _SEGMENT.match(path, pos)
            if found is None:  # cannot happen for paths the walk builds; hide the rest
                parts.append("[...]")
                break
            name, index, quoted = found.groups()
            if index is not None:
                parts.append(f"[{index}]")
            elif not parts:
                parts.append(name if name is not None else f"[{quoted}]")
            else:
                key = name if name is not None else json.loads(quoted)
                parts.append(f"[#{value_hash(self._hash_key, key)[:8]}]")
            pos = found.end()
        return "".join(parts)

    def _hash(self, text: str) -> str:
        return value_hash(self._hash_key, text)

    def _hash_once(self, text: str) -> str:
        return text if _HASH_SHAPE.fullmatch(text) else value_hash(self._hash_key, text)

    # -- the walk -------------------------------------------------------------------------------

    def _key(self, key: str) -> _Key:
        found = self._keys.get(key)
        if found is None:
            segment = f".{key}" if _PLAIN_NAME.match(key) else f"[{json.dumps(key)}]"
            found = _Key(self.policy.match(key), key_forms(key), segment)
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[key] = found
        return found

    def _mapping(
        self,
        data: Mapping[Any, Any],
        path: str,
        hashing: bool,
        scan: bool,
        depth: int,
        call: _Call,
        within: Rule | None = None,
    ) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            where = self.safe_path(path) or "attributes"
            raise InvalidInputError(f"{where} is nested deeper than {MAX_DEPTH}")
        log = call.log
        out: dict[str, Any] = {}
        pair = self._pair(data) if "value" in data else None
        for key, value in data.items():
            if type(key) is not str:
                where = f"at {self.safe_path(path)}" if path else "at the top level"
                raise InvalidTypeError(f"a key {where} is a {type(key).__name__}, not a str")
            info = self._key(key)
            child = path + info.segment if path else info.segment.removeprefix(".")
            normalized = info.forms.normalized
            if depth == 0 and self._allow is not None and normalized not in self._allow:
                if log is not None:
                    log.append(Decision(child, "allowlist-drop", "allow", "not in allow"))
                continue
            match = info.match
            paired = match is None and pair is not None and key == "value"
            if paired:
                match = pair
            if within is not None and (match is None or match.kind != "exact"):
                # Inside a walked object its own list wins over token and stem rules: a card's
                # `fingerprint` is Stripe's card id, not biometric data.
                if within.keeps_inside(info.forms):
                    if log is not None:
                        why = f"{normalized!r} is in keep_inside of {within.name}"
                        log.append(Decision(child, "keep", within.name, why, _KEEP_INSIDE))
                    out[key] = self._value(value, child, hashing, scan, depth, call)
                    continue
                if match is None:
                    match = RuleMatch(within, "", "token")
            if match is None or (hashing and match.rule.action in ("keep", "hash")):
                if log is not None and not hashing:
                    log.append(Decision(child, "keep", None, "no rule matches this key"))
                out[key] = self._value(value, child, hashing, scan, depth, call)
                continue
            rule = match.rule
            if self.policy.booleans_describe and _describes(match, value):
                if log is not None:
                    why = f"{normalized!r} matches {rule.name}, but a true/false value only says"
                    why += " something about it"
                    log.append(Decision(child, "keep", rule.name, why, _BOOLEANS))
                out[key] = value
                continue
            if paired:
                reason = f"the pair's name matches {match.kind} key {match.via!r}"
            elif match.via:
                reason = f"{normalized!r} matches {match.kind} key {match.via!r}"
            else:
                reason = f"{normalized!r} is not a key {rule.name} lets pass inside it"
            if rule.reason:
                reason += f" ({rule.reason})"
            library = f"policy ({match.kind})"
            if rule.action == "keep":
                if log is not None:
                    log.append(Decision(child, "keep", rule.name, reason, library))
                out[key] = self._value(value, child, hashing, rule.scan, depth, call)
            elif rule.descend and isinstance(value, Mapping | list | tuple):
                if log is not None:
                    log.append(
                        Decision(child, "keep", rule.name, reason + "; walked into", library)
                    )
                out[key] = self._descend(value, child, rule, hashing, scan, depth + 1, call)
            else:
                if log is not None:
                    log.append(Decision(child, rule.action, rule.name, reason, library))
                if rule.action == "redact":
                    out[key] = REDACTED
                elif rule.action == "hash":
                    out[key] = self._value(value, child, True, scan, depth, call)
        return out

    def _pair(self, data: Mapping[Any, Any]) -> RuleMatch | None:
        """The rule for a name/value pair's ``value``: the rule its name matches.

        Real systems send custom fields as pairs: Shopify's ``note_attributes`` and line-item
        ``properties`` (``{"name": "Phone", "value": ...}``), Stripe's ``custom_fields``,
        HubSpot's and Intercom's property lists. The value is then governed as if it sat under
        a key spelt like the name. Small mappings only (at most six keys): a larger one is a
        record that happens to have a ``name`` field.
        """
        if len(data) > 6:
            return None
        for field in _PAIR_NAMES:
            name = data.get(field)
            if type(name) is str and name and len(name) <= 150:
                return self._key(name).match
        return None

    def _descend(
        self,
        value: Mapping[Any, Any] | list[Any] | tuple[Any, ...],
        path: str,
        rule: Rule,
        hashing: bool,
        scan: bool,
        depth: int,
        call: _Call,
    ) -> Any:
        log = call.log
        if isinstance(value, Mapping):
            return self._mapping(value, path, hashing, scan, depth, call, rule)
        if depth > MAX_DEPTH:
            raise InvalidInputError(f"{self.safe_path(path)} is nested deeper than {MAX_DEPTH}")
        out: list[Any] = []
        for index, item in enumerate(value):
            where = f"{path}[{index}]"
            if isinstance(item, Mapping | list | tuple):
                out.append(self._descend(item, where, rule, hashing, scan, depth + 1, call))
                continue
            if log is not None:
                why = "list item under the key"
                log.append(Decision(where, rule.action, rule.name, why, _POLICY))
            if rule.action == "redact":
                out.append(REDACTED)
            elif rule.action == "hash":
                out.append(self._value(item, where, True, scan, depth, call))
        return out

    def _value(
        self,
        value: Any,
        path: str,
        hashing: bool,
        scan: bool,
        depth: int,
        call: _Call,
    ) -> Any:
        log = call.log
        kind = type(value)
        if kind is str:
            if hashing:
                return call.hash_text(value)
            if scan and self._scan is not None:
                spans = self._scan(value, call.region)
                if spans:
                    if log is not None:
                        _log_spans(log, path, spans)
                    return detectors.redact(value, spans)
            return value
        if value is None:
            return None
        if kind is bool or kind is float:
            return call.hash_text(json.dumps(value)) if hashing else value
        if kind is int:
            if hashing:
                return call.hash_text(json.dumps(value))
            if (
                scan
                and self._cards_in_ints
                and 10**12 <= value < 10**19
                and detectors.is_card_number(str(value))
            ):
                if log is not None:
                    reason = "the number is a valid card number"
                    library = detectors.LIBRARIES["card"]
                    log.append(Decision(path, "detector-redact", "detector:card", reason, library))
                return "[REDACTED:card]"
            return value
        if isinstance(value, Mapping):
            return self._mapping(value, path, hashing, scan, depth + 1, call)
        if isinstance(value, list | tuple):
            if depth > MAX_DEPTH:
                where = self.safe_path(path)
                raise InvalidInputError(f"{where} is nested deeper than {MAX_DEPTH}")
            return [
                self._value(item, f"{path}[{index}]", hashing, scan, depth + 1, call)
                for index, item in enumerate(value)
            ]
        if isinstance(value, str):  # subclasses: str enums and the like
            return self._value(str.__str__(value), path, hashing, scan, depth, call)
        if isinstance(value, int | float):
            plain = int(value) if isinstance(value, int) else float(value)
            return self._value(plain, path, hashing, scan, depth, call)
        where = self.safe_path(path)
        raise InvalidTypeError(f"{where} holds a {kind.__name__}, which is not JSON data")


def _describes(match: RuleMatch, value: Any) -> bool:
    """Whether ``value`` can only say something *about* the matched field, not hold it.

    A boolean under ``has_password``, ``billing_address_same_as_shipping`` or
    ``phone_on_file`` is a fact about the field; it cannot be a password, an address or a phone
    number. Like the qualifiers, this holds for token and stem matches of rules that accept
    qualifiers; exact keys (``password: true``) and the special categories (``hiv_positive:
    true`` *is* health data) are still applied.
    """
    return (
        type(value) is bool
        and match.kind != "exact"
        and match.rule.qualifiers
        and match.rule.action != "keep"
    )


def _region(attributes: Mapping[str, Any]) -> str | None:
    """The phone region the profile names (a top-level ``country`` attribute), if any."""
    for key in _COUNTRY_KEYS:
        region = known_region(attributes.get(key))
        if region is not None:
            return region
    return None
