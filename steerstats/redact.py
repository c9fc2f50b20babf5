"""Keeping credentials off disk: scrub them from text and URLs, and spot option names that
would carry them.

A low module: backends redact their base URLs in ``identity()`` (which goes into cache keys,
records and manifests), the cache redacts error texts, and the experiment spec refuses
credential-looking option names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

__all__ = ["MASK", "looks_like_key", "redact", "redact_url", "secret_name", "secret_values"]

MASK = "***"

_SECRET_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-*]{6,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-.=]{6,}"),
]
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_ENV_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "AUTH")
# Words that name a credential when they make up an option name or a query parameter.
_SECRET_WORDS = {"auth", "authorization", "token", "secret", "password", "passwd", "bearer",
                 "cookie", "credential", "credentials", "apikey", "signature", "sig"}
_KEY_PREFIXES = re.compile(r"^(sk|pk|rk|hf|gf|ghp|gho|xox[abp]|key|tok)[-_][A-Za-z0-9_\-]{8,}$")
_TOKENISH = re.compile(r"^[A-Za-z0-9_\-.~+/=]{20,}$")


def secret_values() -> list[str]:
    """Values of environment variables that look like credentials (to scrub from any text)."""
    out = []
    for name, value in os.environ.items():
        upper = name.upper()
        if value and len(value) >= 6 and any(t in upper for t in _ENV_MARKERS):
            out.append(value)
    return out


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with API keys, bearer tokens, credential env values and URL credentials
    replaced by ``***``."""
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group()), text)
    for value in sorted({*secret_values(), *extra}, key=len, reverse=True):
        if value:
            text = text.replace(value, MASK)
    text = _SECRET_PATTERNS[0].sub("sk-" + MASK, text)
    return _SECRET_PATTERNS[1].sub(r"\1" + MASK, text)


def secret_name(name: str) -> bool:
    """Whether an option or field name names a credential (``api_key``, ``Authorization``,
    ``x-api-key``, ``access_token``...; not ``max_tokens``)."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    if not words:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    joined = "".join(words)
    return joined in {"key", "apikey", "xapikey", "accesskey", "privatekey", "secretkey"} or (
        any(a == "api" and b == "key" for a, b in zip(words, words[1:], strict=False)))


def looks_like_key(value: str) -> bool:
    """Whether ``value`` looks like a credential: a credential from the environment, a known
    key prefix (``sk-``, ``hf_``...), or a long random-looking token (20+ characters mixing at
    least 4 letters and 4 digits)."""
    if not value:
        return False
    if any(value == s or (len(s) >= 8 and s in value) for s in secret_values()):
        return True
    if _KEY_PREFIXES.match(value):
        return True
    if _TOKENISH.match(value):
        letters = sum(c.isalpha() for c in value)
        digits = sum(c.isdigit() for c in value)
        return letters >= 4 and digits >= 4
    return False


def redact_url(url: str) -> str:
    """``url`` with credentials masked: user info, path segments and query values that are (or
    look like) a key, and values of credential-named query parameters. Other URLs unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if not parts.scheme or not parts.netloc:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    segments = parts.path.split("/")
    path = "/".join(MASK if looks_like_key(seg) else seg for seg in segments)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, MASK if secret_name(k) or looks_like_key(v) else v)
                           for k, v in pairs], safe="*", quote_via=quote)
    fragment = MASK if parts.fragment and looks_like_key(parts.fragment) else parts.fragment
    out = urlunsplit((parts.scheme, netloc, path, query, fragment))
    return out if out != urlunsplit(parts) else url
