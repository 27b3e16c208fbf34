"""Reading password-reset mails: the link in a message, and waiting for a mail in a folder
(MAIL_BACKEND=file)."""

from __future__ import annotations

import asyncio
import re
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

LINK = re.compile(r"(https?://\S+/password/reset\?token=\S+)")
WAIT = 15.0


def reset_link(message: EmailMessage) -> str:
    """The reset link, read from the plain-text part as a person would click it."""
    part = message.get_body(preferencelist=("plain",))
    assert part is not None and isinstance(part, EmailMessage)
    found = LINK.search(part.get_content())
    assert found is not None, part.get_content()
    return found.group(1)


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


def mails_to(folder: Path, to: str) -> list[EmailMessage]:
    found = []
    for path in sorted(folder.glob("*.eml")) if folder.is_dir() else []:
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        if message["To"] == to:
            found.append(message)
    return found


async def wait_for_mail(folder: Path, to: str, *, timeout: float = WAIT) -> EmailMessage:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = mails_to(folder, to)
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no mail to {to} in {folder} after {timeout} s")
