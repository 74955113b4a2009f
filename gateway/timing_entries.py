"""``Server-Timing`` entries as text: splitting a header value into entries, and the entry by
which a gateway says who it is (``gateway;desc="iris-proxy"``).

A gateway's answer names it so that the hop in front can name its stages by what it is: the
entries of the next gateway become ``iris-proxy.predict``, not ``predictor.predict`` (which
reads as the predictor's own); an upstream that does not say becomes its role.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["IDENTITY", "identity_entry", "prefixed", "split"]

# The name of the entry that names the answering gateway (its `desc` is the service name).
IDENTITY = "gateway"

# An entry runs to the next comma outside a quoted string (desc="a, b" is one entry).
_ENTRY = re.compile(r'(?:[^,"]|"(?:\\.|[^"\\])*")+')
_DESC = re.compile(r';\s*desc\s*=\s*(?:"((?:\\.|[^"\\])*)"|([^;,\s]+))', re.I)
# What may stand in an entry's name: an HTTP token (RFC 9110, 5.6.2).
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9!#$%&'*+.^_`|~-]+")
_ESCAPED = re.compile(r"\\(.)")


def split(values: Iterable[str]) -> list[str]:
    """The entries of one or more header values, stripped, empty ones left out."""
    entries = []
    for value in values:
        for entry in _entries(value):
            entry = entry.strip()
            if entry:
                entries.append(entry)
    return entries


def _entries(value: str) -> list[str]:
    # Where every comma stands outside quotes, they are the ends of the entries: the pattern
    # (which reads a character at a time) is only needed for a comma inside a quoted string.
    parts = value.split(",")
    if '"' in value and ("\\" in value or any(part.count('"') % 2 for part in parts)):
        return _ENTRY.findall(value)
    return parts


def identity_entry(service_name: str) -> str:
    """The entry naming this gateway."""
    escaped = service_name.replace("\\", "\\\\").replace('"', '\\"')
    return f'{IDENTITY};desc="{escaped}"'


def prefixed(entries: list[str], role: str) -> list[str]:
    """An upstream's entries named after it: after the service its identity entry gives
    (that entry dropped), else after its `role`."""
    prefix = role
    kept = []
    for entry in entries:
        if IDENTITY in entry and entry.split(";", 1)[0].strip() == IDENTITY:
            prefix = _named(entry) or prefix
        else:
            kept.append(entry)
    return [f"{prefix}.{entry}" for entry in kept]


# An upstream's identity entry is the same in every answer: its name is read once.
_NAMES: dict[str, str] = {}
_MAX_NAMES = 256


def _named(entry: str) -> str:
    """The name an identity entry gives, as a token ("" when it gives none)."""
    name = _NAMES.get(entry)
    if name is None:
        match = _DESC.search(entry)
        desc = (match.group(1) or match.group(2) or "") if match else ""
        desc = _ESCAPED.sub(r"\1", desc)
        name = _NOT_TOKEN.sub("_", desc).strip("_")
        if len(_NAMES) >= _MAX_NAMES:  # upstreams that each name themselves anew
            _NAMES.clear()
        _NAMES[entry] = name
    return name
