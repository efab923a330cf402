"""PostgreSQL store URLs: parsed so that a password is never shown, whatever it holds.

A password with an unencoded ``#``, ``?``, ``/`` or ``@`` makes a URL ambiguous to
ordinary parsers, which then show part of it as a host or a path. Here the user
information is everything before the last ``@``, so such a password is still found,
used to connect (passed as its own connection parameter) and scrubbed from every
message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from stet._errors import StoreError

__all__ = ["StoreUrl", "parse_url"]

#: PostgreSQL truncates identifiers longer than this many bytes.
NAME_BYTES = 63
#: stet adds these to the table name for its other tables.
#: What stet appends to the table's name for the objects that go with it (claims and
#: ledger tables, the claims' sequence and its index, the ledger's and records' indexes).
SUFFIXES = ("_claims", "_ledger", "_cseq", "_cseqi", "_lkey", "_nofunc")


@dataclass
class StoreUrl:
    """A parsed ``postgresql://`` store URL.

    Attributes:
        shown: the URL as stet prints it: no password.
        table: the records table (``?table=``, default ``stet_records``).
        params: connection parameters for psycopg (password included).
        secrets: texts to scrub from any message (the password and its pieces).
    """

    shown: str
    table: str
    params: dict[str, str]
    secrets: list[str] = field(default_factory=list)

    def scrub(self, text: str) -> str:
        """``text`` with every trace of the password replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def parse_url(url: str) -> StoreUrl:
    """Parse a store URL.

    Raises:
        StoreError: for a table name PostgreSQL would truncate or that is not an
            identifier, or a URL that cannot be read; the message never shows the
            password.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise StoreError("stet: a PostgreSQL store is a URL: postgresql://user@host/dbname")
    user = password = ""
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, _, password = userinfo.partition(":")
    secrets = _secret_pieces(password)
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        message = _scrub(str(exc), secrets)
        raise StoreError(f"stet: cannot read the store URL: {message}") from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    tables = [v for k, v in query if k == "table"]
    table = tables[-1] if tables else "stet_records"
    params: dict[str, str] = {k: v for k, v in query if k != "table"}
    if host:
        params["host"] = host
    if port:
        params["port"] = str(port)
    dbname = unquote(parts.path.lstrip("/"))
    if dbname:
        params["dbname"] = dbname
    if user:
        params["user"] = unquote(user)
    if password:
        params["password"] = unquote(password)
    shown_user = f"{unquote(user)}@" if user else ""
    shown_port = f":{port}" if port else ""
    shown = f"postgresql://{shown_user}{host or 'localhost'}{shown_port}/{dbname}"
    check_table(table)
    return StoreUrl(shown, table, params, secrets)


def check_table(table: str) -> None:
    """Refuse a table name PostgreSQL would change (truncate) or stet cannot quote."""
    if not table.isidentifier():
        raise StoreError(
            f"stet: table name {table!r} in the store URL is not an identifier; use "
            "letters, digits and underscores, e.g. ?table=sweep_2024"
        )
    longest = max(len(s) for s in SUFFIXES)
    limit = NAME_BYTES - longest
    if len(table.encode("utf-8")) > limit:
        raise StoreError(
            f"stet: table name {table!r} is {len(table.encode('utf-8'))} bytes long. "
            f"PostgreSQL cuts names after {NAME_BYTES} bytes and stet adds up to {longest} "
            f"(e.g. {SUFFIXES[0]}), so two long names could silently share a table. Use a "
            f"name of at most {limit} bytes."
        )


def _secret_pieces(password: str) -> list[str]:
    if not password:
        return []
    pieces = {password, unquote(password)}
    for text in list(pieces):
        pieces.update(p for p in re.split(r"[#?/@:&=]", text) if len(p) >= 3)
    return sorted(pieces, key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
