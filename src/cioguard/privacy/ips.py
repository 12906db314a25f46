"""The ``ip`` detector: IPv4 and IPv6 addresses in free text (log lines, notes, headers).

A key rule redacts ``last_login_ip``; an address in ``"GET /account from 198.51.100.61"`` sits
under an innocent key. Candidates are found by one bounded pattern per family and confirmed by
the standard library's :mod:`ipaddress` (which refuses octets over 255 and leading zeros), so
the parsing is not hand-written; only the candidate shapes are.

Precision: an IPv4 candidate must be exactly four dot-separated numbers, not part of a longer
dotted run (``10.0.19045.4529`` is a Windows build, ``v1.2.3`` a version); an IPv6 candidate
must contain ``::`` or all eight groups and be at least six characters long, so clock times
(``10:00:01``), MAC addresses (``00:1A:2B:3C:4D:5E``) and ``a::b`` pass.

Addresses that no one outside a private network can reach do not identify a person across
networks and are also the shape of four-part versions (``10.0.0.12``), so free text keeps
them: RFC 1918 (10/8, 172.16/12, 192.168/16), loopback, link-local and carrier-grade NAT
(100.64/10); so does a candidate right after ``version``, ``ver``, ``build`` or ``release``.
Under an IP-like key (``client_ip``) every address is redacted by the key rule.

Note:
    A four-part version number of public-looking parts (``2.4.1.7``) without such a word before
    it is an IPv4 address to this detector and is redacted: nothing in the text tells them apart.

Linear time: both patterns start only at a run boundary (lookbehind) and read a bounded,
possessive run, so a long run of digits, dots or hex is read once.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Final

# Each pattern reads its first character before the boundary lookbehind: a leading character
# class lets the regex engine skip every position that cannot start a match (twice as fast on
# ordinary text as a leading lookbehind, which is tried at every position).
_V4: Final = re.compile(
    r"[0-9](?<![A-Za-z0-9.][0-9])[0-9]{0,2}\.(?:[0-9]{1,3}\.){2}[0-9]{1,3}(?![A-Za-z0-9]|\.[0-9])"
)
_V6: Final = re.compile(
    r"[0-9A-Fa-f:](?<![A-Za-z0-9:.][0-9A-Fa-f:])[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:"
    r"[0-9A-Fa-f:]{0,34}+(?![A-Za-z0-9:]|\.[0-9])"
)


_LOCAL_V4: Final = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
              "100.64.0.0/10", "0.0.0.0/8")
)  # fmt: skip
_VERSION_WORDS: Final = ("version", "ver", "build", "release", "v.")

# The uncompressed form's middle, led by a literal so the engine jumps between colons: texts
# with neither this nor "::" (URLs, clock times) skip the IPv6 pattern.
_EIGHT_GROUPS: Final = re.compile(r":[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")


@lru_cache(maxsize=4096)
def _valid(text: str, version: int) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv4Address):
        return version == 4 and not any(address in net for net in _LOCAL_V4)
    return version == 6 and not (address.is_loopback or address.is_link_local)


def _after_version_word(text: str, start: int) -> bool:
    before = text[max(0, start - 9) : start].lower().rstrip(" :=")
    return before.endswith(_VERSION_WORDS)


def find_ip_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every IPv4 and IPv6 address in ``text``."""
    spans: list[tuple[int, int]] = []
    if "." in text:
        for match in _V4.finditer(text):
            if _valid(match.group(), 4) and not _after_version_word(text, match.start()):
                spans.append(match.span())
    if "::" in text or _EIGHT_GROUPS.search(text):
        for match in _V6.finditer(text):
            candidate = match.group()
            shaped = "::" in candidate or candidate.count(":") == 7
            if shaped and len(candidate) >= 6 and _valid(candidate, 6):
                spans.append(match.span())
    return spans
