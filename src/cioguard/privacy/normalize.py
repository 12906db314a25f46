"""Bring keys and scanned text to one form before matching: NFKC, no format characters.

Why: ``\uff14\uff11\uff11\uff11 ...`` (full-width digits), ``4111\u00a01111...`` (no-break
spaces) and ``pass\u200bword`` (a zero-width space) are the same data to a person and to
Customer.io, but not to a regular expression. :func:`fold_text` folds a text for the
detectors and keeps a map from each folded character back to the original, so a match is
redacted in the original text.

Hand-written on purpose: :func:`unicodedata.normalize` folds a whole string but cannot say where
each output character came from, which redaction needs; folding character by character with it
gives that map (NFKC of a lone character differs from NFKC of the string only for composing
sequences, which no detector pattern contains).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Final

# Format characters (Unicode category Cf: zero-width space/joiners, BOM, bidi marks, soft hyphen)
# are removed; other whitespace becomes a plain space.
_SPACE_LIKE = frozenset("\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                        "\u2009\u200a\u202f\u205f\u3000\t")  # fmt: skip


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    if char in _SPACE_LIKE:
        return " "
    if unicodedata.category(char) == "Cf":
        return ""
    folded = unicodedata.normalize("NFKC", char)
    # Dashes of every kind (figure dash, en dash, minus sign, ...) are separators to a detector.
    return "-" if folded in "\u2010\u2011\u2012\u2013\u2014\u2212\ufe63\uff0d" else folded


def fold_text(text: str) -> tuple[str, list[int] | None]:
    """``text`` folded for the detectors, and where each folded character came from.

    ASCII text is returned as it is with no map (the common case costs one ``isascii`` call).
    Otherwise the distinct characters are folded once each and applied with ``str.translate``;
    when every character folds to exactly one character the map is the identity (None again).
    Else ``origin[i]`` is the index in ``text`` of the character that produced folded character
    ``i``, and ``origin[len(folded)]`` is ``len(text)``.
    """
    if text.isascii():
        return text, None
    table = {ord(c): _fold_char(c) for c in set(text) if not c.isascii()}
    folded = text.translate(table)
    if all(len(v) == 1 for v in table.values()):
        return folded, None
    origin: list[int] = []
    for index, char in enumerate(text):
        origin.extend([index] * len(table.get(ord(char), char)))
    origin.append(len(text))
    return folded, origin


def unfold_span(origin: list[int] | None, start: int, end: int) -> tuple[int, int]:
    """The span of the original text that folded characters ``start:end`` came from."""
    if origin is None:
        return start, end
    last = origin[end - 1] + 1 if end > start else origin[start]
    return origin[start], last


_ACRONYM_WORD = re.compile(r"([A-Z]+)([A-Z][a-z])")
_LOWER_UPPER = re.compile(r"([a-z])([A-Z])")
_LETTER_DIGIT = re.compile(r"([A-Za-z])([0-9])|([0-9])([A-Za-z])")
_SEPARATORS = re.compile(r"[\W_]+")


# Letters that NFKD does not split into a base letter and an accent: Polish ł (``hasło``),
# Scandinavian ø/æ, Croatian đ, German ß, French œ.
_NON_DECOMPOSING: Final = str.maketrans(
    {"ß": "ss", "ẞ": "SS", "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE",
     "đ": "d", "Đ": "D", "œ": "oe", "Œ": "OE"}
)  # fmt: skip


def fold_key(key: str) -> str:
    """A key with format characters removed, NFKC applied and accents stripped.

    ``Straße`` -> ``Strasse``, ``Teléfono`` -> ``Telefono``, full-width
    ``\uff50\uff41\uff53\uff53`` -> ``pass``, ``pass\u200bword`` -> ``password``, ``hasło`` ->
    ``haslo``.
    Case is kept so that camelCase still splits.
    """
    if key.isascii():
        return key
    text = "".join(_fold_char(char) for char in key)
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return stripped.translate(_NON_DECOMPOSING)


def normalize_key(key: str) -> str:
    """The snake_case normal form used to compare keys: ``creditCard`` -> ``credit_card``.

    The key is folded first (:func:`fold_key`). Word boundaries inside a word come from ASCII
    case and digit changes; keys in other scripts are lower-cased and split at separators.
    """
    key = fold_key(key)
    key = _ACRONYM_WORD.sub(r"\1_\2", key)
    key = _LOWER_UPPER.sub(r"\1_\2", key)
    key = _LETTER_DIGIT.sub(lambda m: "_".join(g for g in m.groups() if g), key)
    return _SEPARATORS.sub("_", key).strip("_").lower()


# Abbreviations that stand for "number" in field names (``card_no``, ``phone_nr``, ``tel_num``).
NUMBER_WORDS = frozenset({"no", "nr", "num", "nbr", "nro", "nummer", "numero", "number"})


def key_words(normalized: str) -> list[str]:
    """The words of a normalized key, with number abbreviations written ``number``."""
    return ["number" if w in NUMBER_WORDS else w for w in normalized.split("_") if w]
