"""A mail as the features write it (`MailMessage`) and as the backends send it (RFC 5322).

Features say what to send (recipient, subject, plain text, HTML); how that becomes a message a
mail server accepts is decided here once: multipart/alternative with both bodies, a Date, a
Message-ID, and UTF-8 throughout, since organization names and addresses may be non-ASCII.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from app.kit.store import utcnow

# Bodies are quoted-printable: 7-bit clean whatever the text, so no server needs 8BITMIME and
# no line is longer than SMTP allows (a link with a long token included).
_BODY_CTE = "quoted-printable"
_DOT_ATOM = re.compile(r"^[A-Za-z0-9.-]+\Z")


@dataclass(frozen=True, slots=True)
class MailMessage:
    """One mail to one recipient: what a composer returns."""

    to: str  # `addr@domain` or `Name <addr@domain>`; may be non-ASCII
    subject: str
    text: str  # the plain-text body: every mail can be read without HTML
    html: str


def sender_domain(sender: str) -> str:
    """The domain of `sender` (MAIL_FROM) in ASCII, for Message-IDs; `localhost` if it has none."""
    domain = parseaddr(sender)[1].rpartition("@")[2].strip()
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if domain else ""
    except UnicodeError:
        ascii_domain = ""
    return ascii_domain if _DOT_ATOM.match(ascii_domain) else "localhost"


def message_id_for(key: str, sender: str) -> str:
    """A Message-ID that depends only on `key` (an outbox entry's id): a mail sent again after a
    crash carries the same id, so a receiver can tell it is the same mail. The key is hashed, as
    it may hold characters a Message-ID may not."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}.outbox@{sender_domain(sender)}>"


def build_email(msg: MailMessage, *, sender: str, message_id: str | None = None) -> EmailMessage:
    """`msg` as a multipart/alternative RFC 5322 message (plain text first, HTML preferred).

    A header holding a line break (a composer's bug, or injection) raises ValueError.
    """
    email = EmailMessage(policy=policy.default)
    email["From"] = sender
    email["To"] = msg.to
    email["Subject"] = msg.subject
    email["Date"] = format_datetime(utcnow())
    email["Message-ID"] = message_id or make_msgid(domain=sender_domain(sender))
    # RFC 3834: a machine wrote this; auto-responders (out of office) should not answer it.
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(msg.text, subtype="plain", charset="utf-8", cte=_BODY_CTE)
    email.add_alternative(msg.html, subtype="html", charset="utf-8", cte=_BODY_CTE)
    return email


def needs_smtputf8(email: EmailMessage) -> bool:
    """Whether an address of `email` is non-ASCII (RFC 6531): such a message is written with
    UTF-8 headers (SMTPUTF8), since an address cannot be an RFC 2047 encoded word."""
    fields = ("From", "To", "Cc", "Sender", "Reply-To")
    return any(not parseaddr(str(email.get(f, "")))[1].isascii() for f in fields)


def as_bytes(email: EmailMessage) -> bytes:
    """The message as it travels: CRLF line ends, UTF-8 headers only when an address needs it."""
    chosen = policy.SMTPUTF8 if needs_smtputf8(email) else policy.SMTP
    return email.as_bytes(policy=chosen)


def plain_text(email: EmailMessage) -> str:
    """The plain-text body of a message built by `build_email`."""
    part = email.get_body(preferencelist=("plain",))
    if not isinstance(part, EmailMessage):
        return ""
    content = part.get_content()
    return content if isinstance(content, str) else ""
