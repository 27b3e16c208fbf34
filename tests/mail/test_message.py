"""Building a message: both bodies, the headers a server expects, UTF-8 that survives the trip."""

from __future__ import annotations

import re
from email.message import EmailMessage

import pytest

from app.mail.message import MailMessage, as_bytes, build_email, message_id_for, needs_smtputf8
from tests.mail.support import SENDER, invitation, parse_mail

pytestmark = pytest.mark.timeout(10)


def _reparse(email: EmailMessage) -> EmailMessage:
    return parse_mail(as_bytes(email))


def test_plain_and_html_parts_and_non_ascii_survive_serialisation() -> None:
    msg = invitation(1, to="Zoë Ünicode <zoe@example.com>")
    wire = as_bytes(build_email(msg, sender=SENDER))
    assert wire.isascii(), "ASCII addresses: the whole message is 7-bit (no 8BITMIME needed)"
    assert b"\r\n" in wire and max(len(line) for line in wire.split(b"\r\n")) <= 998

    parsed = parse_mail(wire)
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed["Subject"] == msg.subject
    assert parsed["To"] == msg.to and parsed["From"] == SENDER
    assert parsed["Date"] is not None and parsed["Auto-Submitted"] == "auto-generated"
    assert re.fullmatch(r"<[^<>@\s]+@example\.com>", str(parsed["Message-ID"]))
    plain = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    assert isinstance(plain, EmailMessage) and isinstance(html, EmailMessage)
    assert plain.get_content().replace("\r\n", "\n") == msg.text
    assert html.get_content().replace("\r\n", "\n").rstrip("\n") == msg.html


def test_a_non_ascii_address_is_written_as_smtputf8() -> None:
    msg = invitation(2, to="Zoë <zoë@exämple.com>")
    email = build_email(msg, sender=SENDER)
    assert needs_smtputf8(email)
    parsed = _reparse(email)
    assert parsed["To"].addresses[0].addr_spec == "zoë@exämple.com"
    assert parsed["Subject"] == msg.subject


def test_message_ids_depend_on_the_key_only_and_are_valid() -> None:
    first = message_id_for("invitation:6650f0c2e1", SENDER)
    assert first == message_id_for("invitation:6650f0c2e1", SENDER)
    assert first != message_id_for("invitation:6650f0c2e2", SENDER)
    assert re.fullmatch(r"<[0-9a-f]{32}\.outbox@example\.com>", first)
    # A sender without a usable domain still gives a valid id.
    assert message_id_for("k", "no-reply@[127.0.0.1]").endswith("@localhost>")
    assert message_id_for("k", "Ä <a@exämple.com>").endswith("@xn--exmple-cua.com>")
    email = build_email(invitation(3), sender=SENDER, message_id=first)
    assert _reparse(email)["Message-ID"] == first


def test_a_header_with_a_line_break_is_refused() -> None:
    injected = MailMessage(
        to="a@example.com", subject="hi\r\nBcc: victim@example.com", text="x", html="<p>x</p>"
    )
    with pytest.raises(ValueError):
        build_email(injected, sender=SENDER)
