"""Sanitize cost: time per KB on adversarial text against ordinary text of the same size.

Issue 16 found the old JWT pattern quadratic (96 KB of ``eyJ-`` took 2.6 s). Here, for every
detector, texts made of repeated *prefixes* of its patterns (what makes a backtracking regex
rescan: a pattern that almost matches, again and again) are sanitized by the shipped default
policy as one event-data string, and their time per KB is compared with ordinary product text
of the same size (order ids, dates, prices, SKUs, URLs: digits everywhere, no match). The ratio
must stay under 3 for every input; each is also timed at a quarter of the size, so a ratio that
grows with size (super-linear time) shows.

A second part times ``Sanitizer.apply`` on profiles at Customer.io's limits (300 attributes,
1000-byte values): ordinary text values, and every value adversarial.

Results: ``results/sanitize.json``. Timings are the fastest of repeated runs in this process (the
least disturbed on a shared machine); only ratios measured in the same run are read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.common import recorded, say, sized
from cioguard.privacy.policy import default_policy
from cioguard.privacy.sanitizer import MAX_ATTRIBUTES, MAX_VALUE_BYTES, Sanitizer

NAME = "sanitize"
RATIO_LIMIT = 3.0

ORDINARY_UNITS = (
    "Order 113-1234567-1234567 shipped on 2024-05-01 for $12.99 (3 items, SKU-12345-678). ",
    "Track it at https://shop.example.com/t/9f8e7d?ref=abc&page=2 until 2024-06-30T10:00:00Z. ",
    "Plan pro, 25 seats, renews 1717200000; version 5.12.3, build 20240501.7, 99.9% uptime. ",
    "Invoice INV-2024-000123 of EUR 1,299.00 paid; ticket #48213 closed after 2 replies. ",
)

# Repeated prefixes of each detector's patterns (near misses), by detector.
ADVERSARIAL: dict[str, dict[str, str]] = {
    "card": {
        "grouped prefix": "4111 1111 1111 111 ",
        "compact prefix": "411111111111 ",
        "dash groups": "4111-1111-",
        "dotted groups": "4111.1111.1111.",
        "digits and dots": "1.",
    },
    "ssn": {"prefix": "219-09-", "short serial": "219-09-999 "},
    "iban": {"grouped prefix": "DE89 3704 0044 ", "country and check": "DE89", "spaced": "GB2 "},
    "phone": {
        "international prefix": "+1 (415) 555-",
        "national prefix": "(415) 555-267 ",
        "single digits": "1 ",
        "parenthesised": "(4",
        "trunk zeros": "0 ",
    },
    "national_id": {
        "nino prefix": "QQ 12 34 56 ",
        "codice fiscale prefix": "RCCMNL83S18",
        "cpf prefix": "123.456.789-",
        "nir prefix": "2 95 10 99 126 ",
        "labelled pesel": "PESEL 9107240575 ",
        "label only": "tax id: ",
        "label and run": "BSN 1A2B3C4D5E6F7G8H9 ",
    },
    "ip": {
        "ipv4 prefix": "198.51.100.",
        "dotted run": "1.2.3.4.",
        "ipv6 prefix": "2001:db8::",
        "colon run": "ab:",
    },
    "dob": {
        "label only": "DOB: ",
        "label and digits": "date of birth 12.03.",
        "label and month": "born on March 12, ",
    },
    "secret": {
        "jwt (issue 16)": "eyJ-",
        "jwt header only": "eyJhbGciOiJIUzI1.",
        "private key": "-----BEGIN PRIVATE KEY-----",
        "url credentials": "https://user:",
        "authorization": "Authorization: ",
        "password pair": "password=",
        "prefixed pair": "AWS_SECRET_ACCESS_KEY=",
        "token words": "token token ",
        "webhook secret": "whsec_",
        "openai": "sk-proj-",
        "aws": "AKIA",
        "slack": "xoxb-",
        "bcrypt": "$2b$12$",
    },
    "normalize": {"full-width digits": "\uff14\uff11\uff11\uff11 ", "zero-width": "4\u200b1\u200b"},
}


def fill(unit: str | tuple[str, ...], size: int) -> str:
    """``unit`` (or the units in turn) repeated to exactly ``size`` characters."""
    units = (unit,) if isinstance(unit, str) else unit
    out: list[str] = []
    length = 0
    i = 0
    while length < size:
        out.append(units[i % len(units)])
        length += len(out[-1])
        i += 1
    return "".join(out)[:size]


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls, in seconds (the least disturbed by a shared machine)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def per_kb(sanitizer: Sanitizer, text: str, repeats: int) -> float:
    """Fastest microseconds per KB (of UTF-8, as Customer.io counts) to sanitize ``text``."""
    seconds = timed(lambda: sanitizer.apply({"note": text}, enforce_limits=False), repeats)
    return seconds * 1e6 / (len(text.encode("utf-8")) / 1024)


def paired(sanitizer: Sanitizer, unit: str, size: int, repeats: int) -> tuple[float, float]:
    """(adversarial, ordinary) µs/KB, ordinary measured right before: both see the same load."""
    ordinary = per_kb(sanitizer, fill(ORDINARY_UNITS, size), repeats)
    text = fill(unit, size)
    while len(text.encode("utf-8")) > size:  # same size in bytes (full-width digits are 3)
        text = text[: len(text) * size // len(text.encode("utf-8"))]
    return per_kb(sanitizer, text, repeats), ordinary


def text_ratios(sanitizer: Sanitizer, size: int, repeats: int) -> dict[str, Any]:
    """Per detector and input: µs/KB at ``size`` and ``size // 4``, and ratios to ordinary."""
    rows: dict[str, Any] = {}
    for detector, inputs in ADVERSARIAL.items():
        for label, unit in inputs.items():
            full, base = paired(sanitizer, unit, size, repeats)
            quarter, quarter_base = paired(sanitizer, unit, size // 4, repeats)
            rows[f"{detector}: {label}"] = {
                "us_per_kb": round(full, 1),
                "ordinary_us_per_kb": round(base, 1),
                "ratio": round(full / base, 2),
                "us_per_kb_quarter_size": round(quarter, 1),
                "ratio_quarter_size": round(quarter / quarter_base, 2),
            }
            say(f"{NAME}: {detector}: {label}: {full:.0f} us/KB, x{full / base:.2f}")
    worst = {
        detector: max(
            max(r["ratio"], r["ratio_quarter_size"])
            for name, r in rows.items()
            if name.startswith(detector + ":")
        )
        for detector in ADVERSARIAL
    }
    return {"inputs": rows, "worst_ratio_by_detector": worst, "worst_ratio": max(worst.values())}


def profile(values: Callable[[int], str]) -> dict[str, str]:
    """A profile at Customer.io's limits: 300 attributes of 1000-byte values."""
    return {f"attribute_{i:03d}": values(i)[:MAX_VALUE_BYTES] for i in range(MAX_ATTRIBUTES)}


def typical_value(i: int) -> Any:
    """A mix like real profiles: short strings, numbers, flags, dates, a few long notes."""
    kind = i % 10
    if kind == 0:
        return fill(ORDINARY_UNITS[i % 4 :] + ORDINARY_UNITS, MAX_VALUE_BYTES)
    if kind in (1, 2):
        return i * 37
    if kind == 3:
        return i % 2 == 0
    if kind == 4:
        return f"2024-{i % 12 + 1:02d}-{i % 28 + 1:02d}T10:00:00Z"
    return ("pro", "Ada", "Berlin", "de-DE", f"cus_{i:08d}", "gold")[kind % 6]


def profile_times(sanitizer: Sanitizer, repeats: int) -> dict[str, float]:
    units = [u for inputs in ADVERSARIAL.values() for u in inputs.values()]
    typical = {f"attribute_{i:03d}": typical_value(i) for i in range(MAX_ATTRIBUTES)}
    dense = profile(lambda i: fill(ORDINARY_UNITS[i % 4 :] + ORDINARY_UNITS, MAX_VALUE_BYTES))
    hostile = profile(lambda i: fill(units[i % len(units)], MAX_VALUE_BYTES // 4))
    return {
        "typical_300_attributes_ms": round(
            timed(lambda: sanitizer.apply(typical), repeats) * 1e3, 2
        ),
        "all_300_values_1000_bytes_ms": round(
            timed(lambda: sanitizer.apply(dense), repeats) * 1e3, 2
        ),
        "all_300_values_adversarial_ms": round(
            timed(lambda: sanitizer.apply(hostile), repeats) * 1e3, 2
        ),
    }


def main() -> dict[str, Any]:
    size = sized(96 * 1024, 16 * 1024)
    repeats = sized(7, 3)
    sanitizer = Sanitizer(default_policy(), b"bench-sanitize-key")
    with recorded(NAME) as result:
        result["setup"] = {
            "policy": default_policy().version, "text_bytes": size, "repeats": repeats,
            "ratio_limit": RATIO_LIMIT,
        }  # fmt: skip
        result["text"] = text_ratios(sanitizer, size, repeats)
        result["profile_at_limits"] = profile_times(sanitizer, sized(20, 3))
        say(f"{NAME}: worst ratio x{result['text']['worst_ratio']}; profile at limits "
            f"{result['profile_at_limits']}")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
