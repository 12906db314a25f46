"""Random ordinary product data: what a sanitizer must pass unchanged (the false-positive probe).

A seeded generator (``random.Random(seed)``), so a failure names a reproducible value: ids with
prefixes (Stripe-, Shopify- and Amazon-style), UUIDs (with and without dashes), ISO timestamps and
Unix seconds/milliseconds, prices, quantities, SKUs, semantic versions, hex digests (MD5, SHA-1,
SHA-256), URLs without credentials, zip codes, dates, percentages and short product sentences.

Not included, on purpose: bare 13-19 digit numbers. One in ten of those passes Luhn with a
card prefix; such a value is indistinguishable from a card number (docs/policy.md).
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Callable, Iterator

_WORDS = (
    "blue",
    "shirt",
    "order",
    "shipped",
    "plan",
    "pro",
    "team",
    "gift",
    "size",
    "large",
    "return",
    "window",
    "cart",
    "promo",
    "spring",
    "sale",
    "widget",
    "bundle",
    "trial",
)


def _id(r: random.Random) -> str:
    prefix = r.choice(("cus_", "ord_", "sku_", "inv_", "usr_", "prod_", "pi_", "ch_"))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return prefix + "".join(r.choice(alphabet) for _ in range(r.randint(8, 24)))


def _amazon(r: random.Random) -> str:
    return f"{r.randint(100, 999)}-{r.randint(0, 9_999_999):07d}-{r.randint(0, 9_999_999):07d}"


def _uuid(r: random.Random) -> str:
    value = uuid.UUID(int=r.getrandbits(128), version=4)
    return str(value) if r.random() < 0.7 else value.hex


def _timestamp(r: random.Random) -> str:
    seconds = r.randint(1_500_000_000, 1_900_000_000)
    kind = r.randrange(4)
    if kind == 0:
        return str(seconds)
    if kind == 1:
        return str(seconds * 1000 + r.randint(0, 999))
    day = r.randint(1, 28)
    if kind == 2:
        return (
            f"20{r.randint(10, 30)}-{r.randint(1, 12):02d}-{day:02d}T{r.randint(0, 23):02d}:"
            f"{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z"
        )
    return f"20{r.randint(10, 30)}-{r.randint(1, 12):02d}-{day:02d}"


def _price(r: random.Random) -> str:
    return r.choice(("", "$", "EUR ", "£")) + f"{r.randint(0, 99_999)}.{r.randint(0, 99):02d}"


def _sku(r: random.Random) -> str:
    return f"{r.choice(('SKU', 'ART', 'P'))}-{r.randint(10_000, 99_999)}-{r.randint(100, 999)}"


def _version(r: random.Random) -> str:
    return f"{r.randint(0, 20)}.{r.randint(0, 40)}.{r.randint(0, 200)}"


def _digest(r: random.Random) -> str:
    algo = r.choice((hashlib.md5, hashlib.sha1, hashlib.sha256))
    return algo(r.randbytes(16)).hexdigest()


def _url(r: random.Random) -> str:
    host = r.choice(("shop.example.com", "cdn.example.net", "app.example.io"))
    path = f"{r.choice(_WORDS)}/{r.randint(1, 99999)}"
    return f"https://{host}/{path}?ref={_id(r)}&page={r.randint(1, 50)}"


def _zip(r: random.Random) -> str:
    return r.choice(
        (
            f"{r.randint(10000, 99999)}",
            f"{r.randint(10000, 99999)}-{r.randint(1000, 9999)}",
            f"{r.randint(1000, 9999)} {r.choice('ABCDEFGH')}{r.choice('JKLMNPRS')}",
        )
    )


def _sentence(r: random.Random) -> str:
    words = [r.choice(_WORDS) for _ in range(r.randint(3, 9))]
    words.insert(r.randrange(len(words)), str(r.randint(1, 500)))
    return " ".join(words) + r.choice((".", "!", ""))


def _percent(r: random.Random) -> str:
    return f"{r.randint(0, 100)}.{r.randint(0, 9)}%"


GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "id": _id,
    "amazon_order": _amazon,
    "uuid": _uuid,
    "timestamp": _timestamp,
    "price": _price,
    "sku": _sku,
    "version": _version,
    "digest": _digest,
    "url": _url,
    "zip": _zip,
    "sentence": _sentence,
    "percent": _percent,
}


def ordinary_values(count: int, seed: int = 16) -> Iterator[tuple[str, str]]:
    """``count`` (kind, value) pairs, the kinds in turn."""
    r = random.Random(seed)
    kinds = list(GENERATORS)
    for i in range(count):
        kind = kinds[i % len(kinds)]
        yield kind, GENERATORS[kind](r)
