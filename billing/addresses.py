"""Address and SMTP URL parsing for the settings, the org directory and email; no I/O.

Plain addresses for the envelope, the To header, the org directory and the settings alike;
mailboxes for the sender; the server URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import Address
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from billing.errors import ConfigError

URL_FORMS = (
    "smtp://user:password@host:587 (STARTTLS), smtps://user:password@host:465 (TLS) "
    "or smtp://host:1025 (a local server, plain)"
)
_HOST = re.compile(r"[A-Za-z0-9._:-]+")

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+{_LABEL}")
_NOT_IN_PLAIN_ADDRESS = set('<>()[]\\,;:"')


def plain_address_problem(address: str) -> str | None:
    """Why `address` is not a plain name@example.com (None when it is).

    A plain address is what may go into a To header and an SMTP RCPT command: ASCII, no
    display name, brackets, quotes, lists, spaces, control characters or RFC 2047 encoded words.
    """
    if not address:
        return "it is empty"
    if any(not ch.isprintable() for ch in address):
        return "it contains a line break or another control character"
    if "=?" in address:
        return "it contains an RFC 2047 encoded word (=?...?=)"
    if _NOT_IN_PLAIN_ADDRESS & set(address):
        return "it has a display name, brackets, quotes or a list; give only name@example.com"
    if any(ch.isspace() for ch in address):
        return "it contains a space"
    if not address.isascii():
        return "it contains non-ASCII characters"
    if address.count("@") != 1:
        return "it has no @" if "@" not in address else "it has more than one @"
    local, domain = address.split("@")
    if len(address) > 254 or len(local) > 64:
        return "it is too long"
    if not _LOCAL_PART.fullmatch(local):
        return "the part before @ is not valid"
    if not _DOMAIN.fullmatch(domain):
        return "the domain is not valid (like example.com)"
    try:
        parsed = Address(addr_spec=address)
    except (HeaderParseError, IndexError, ValueError, TypeError):
        return "it is not a valid address"
    return None if parsed.addr_spec == address else "it is not a valid address"


def parse_mailbox(text: str) -> Address:
    """`name@example.com` or `Display Name <name@example.com>` as an Address; ValueError if not.

    For addresses from settings (sender, Reply-To): the display name may hold neither control
    characters, quotes, brackets nor encoded words, and the address must be plain.
    """
    if any(not ch.isprintable() for ch in text):
        raise ValueError("it contains a line break or another control character")
    if "=?" in text:
        raise ValueError("it contains an RFC 2047 encoded word (=?...?=)")
    stripped = text.strip()
    name, address = "", stripped
    if stripped.endswith(">") and "<" in stripped:
        name, _, bracketed = stripped.rpartition("<")
        address = bracketed[:-1]
        name = name.strip()
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1]
        if set(name) & set('"<>\\'):
            raise ValueError("its display name contains quotes or brackets")
    problem = plain_address_problem(address)
    if problem is not None:
        raise ValueError(problem)
    return Address(display_name=name, addr_spec=address)


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to connect; `repr` and `str` never show the password."""

    host: str
    port: int
    implicit_tls: bool = False
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)

    def __str__(self) -> str:
        scheme = "smtps" if self.implicit_tls else "smtp"
        user = f"{self.username}:***@" if self.username is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}"


def parse_smtp_url(url: str, setting: str = "BILLING_SMTP_URL") -> SmtpServer:
    """An SMTP URL as an SmtpServer; a malformed one is a one-line ConfigError.

    The error names the setting and the expected forms but never quotes the URL or a part of
    it: a password with an unencoded '/' or '#' would otherwise show up as "path" or "port".
    User and password are percent-decoded. Default ports: 465 for smtps, 587 for smtp with
    credentials, 25 without.
    """

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"setting {setting}: {reason}; expected {URL_FORMS}")

    scheme, separator, _ = url.partition("://")
    if not separator or scheme.lower() not in ("smtp", "smtps"):
        raise bad("must start with smtp:// or smtps://")
    try:
        parts = urlsplit(url)
        port = parts.port
        hostname = parts.hostname
    except ValueError:
        raise bad(
            "the port or host is not valid (percent-encode @ : / ? # in the password)"
        ) from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad("has a path, query or fragment (percent-encode / ? # in the password)")
    if not hostname or not _HOST.fullmatch(hostname):
        raise bad("has no valid host")
    if (parts.username is None) != (parts.password is None) or parts.username == "":
        raise bad("give both a user and a password, or neither")
    implicit_tls = scheme.lower() == "smtps"
    username = unquote(parts.username) if parts.username is not None else None
    password = SecretStr(unquote(parts.password)) if parts.password is not None else None
    if port == 0:
        raise bad("port 0 is not a port")
    if port is None:
        port = 465 if implicit_tls else 587 if username is not None else 25
    return SmtpServer(hostname, port, implicit_tls, username, password)
