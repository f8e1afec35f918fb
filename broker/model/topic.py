"""Topic pattern matching, AMQP 0-10 style.

A routing key and a binding pattern are split on '.' into words (the empty string has no words;
`a..b` has an empty middle word). In a pattern `*` matches exactly one word and `#` zero or more
words; any other word matches itself only. So `#` matches everything including "", `*` matches any
one-word key but not "", `a.#` matches `a`, `a.b` and `a.b.c`, and `a.*.c` matches `a.b.c` but not
`a.c`.
"""

from __future__ import annotations

from collections.abc import Sequence


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split(".")) if text else ()


def is_wildcard(pattern: str) -> bool:
    return any(w in ("*", "#") for w in words(pattern))


def match(pattern: Sequence[str], key: Sequence[str]) -> bool:
    """Does the word sequence `key` match `pattern`?

    The classic glob algorithm with `#` as star and `*` as one-element: on a mismatch it retries
    from the most recent `#`, letting it swallow one more word. Linear for patterns with at most
    one `#`, O(len(pattern) * len(key)) at worst.
    """
    p = k = 0
    np, nk = len(pattern), len(key)
    star = -1  # index in pattern of the last '#' seen
    star_k = 0  # key index that '#' was last matched up to
    while k < nk:
        if p < np and pattern[p] == "#":
            star, star_k = p, k
            p += 1
        elif p < np and (pattern[p] == "*" or pattern[p] == key[k]):
            p += 1
            k += 1
        elif star >= 0:
            star_k += 1
            p, k = star + 1, star_k
        else:
            return False
    while p < np and pattern[p] == "#":
        p += 1
    return p == np
