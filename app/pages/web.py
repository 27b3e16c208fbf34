"""What every HTML page shares: the templates, the headers, the form body and the password rules.

A page is `render(request, "<name>.html", status=..., heading=..., ...)` over `base.html`
(`<main>`, its `<h1>`, the problems in a `role="alert"` box); a form with a new password uses
the `password_fields` macro (`password_fields.html`) and `password_problems` here, the same
rules as the JSON API (`app.auth.schemas.Password`).

The pages' URLs hold tokens (`?token=...`), so every page is sent with `Referrer-Policy:
no-referrer` and `Cache-Control: no-store` (also the security-header middleware's defaults,
`app.kit.edges`; set here so a page does not depend on them) and a Content-Security-Policy that
allows no script at all and only the service's own stylesheet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

import jinja2
from fastapi import Query, Request
from fastapi.templating import Jinja2Templates
from pydantic import TypeAdapter, ValidationError
from starlette.responses import HTMLResponse

from app.auth.passwords import MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES
from app.auth.schemas import Password
from app.kit.responses import errors

HERE = Path(__file__).resolve().parent
SERVICE_NAME = "Organization service"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}

# HTML's minlength/maxlength count UTF-16 code units, the rules count UTF-8 bytes. A unit is at
# most 3 bytes (a pair, 2 units, is 4), so a valid password has at least ceil(8 / 3) units and
# at most 72: these bounds never refuse a password the service accepts; the service checks the
# bytes (422 with the rule's message).
PASSWORD_MIN_UNITS = -(-MIN_PASSWORD_BYTES // 3)
PASSWORD_MAX_UNITS = MAX_PASSWORD_BYTES

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 10

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every template, whatever its name
    undefined=jinja2.StrictUndefined,  # a misspelt variable is an error, not an empty string
    trim_blocks=True,
    lstrip_blocks=True,
)
_environment.globals.update(
    service_name=SERVICE_NAME,
    password_min_units=PASSWORD_MIN_UNITS,
    password_max_units=PASSWORD_MAX_UNITS,
    password_min_bytes=MIN_PASSWORD_BYTES,
    password_max_bytes=MAX_PASSWORD_BYTES,
)
templates = Jinja2Templates(env=_environment)

_password = TypeAdapter(Password)


def render(
    request: Request,
    template: str,
    *,
    status: int,
    heading: str,
    problems: list[str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page: `template` (over `base.html`) with the page headers."""
    return templates.TemplateResponse(
        request,
        template,
        {"heading": heading, "problems": problems or [], **context},
        status_code=status,
        headers=PAGE_HEADERS,
    )


class BadForm(Exception):
    """The body is not a urlencoded form we can read (400)."""


async def read_form(request: Request, *fields: str) -> dict[str, str]:
    """The urlencoded body's `fields` ("" when absent; the first value when repeated).

    No multipart parser is needed: the pages' forms send `application/x-www-form-urlencoded`.
    The body is bounded by MAX_BODY_BYTES before it gets here (`app.kit.edges`)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != FORM_TYPE:
        raise BadForm()
    body = await request.body()
    try:
        pairs = parse_qsl(
            body.decode("ascii"),  # urlencoded: anything else is percent-encoded
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
            encoding="utf-8",
            errors="strict",
        )
    except ValueError as exc:  # UnicodeDecodeError too; or too many fields
        raise BadForm() from exc
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            values.setdefault(name, value)
    return {name: values.get(name, "") for name in fields}


def password_problems(password: str, confirm: str) -> list[str]:
    """What is wrong with a new password and its confirmation, in words (empty: nothing)."""
    problems: list[str] = []
    try:
        _password.validate_python(password)
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False, include_context=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(message[:1].upper() + message[1:] + ".")
    if password != confirm:
        problems.append("The two passwords do not match.")
    return problems


# A link page's token (`?token=` from a mail) and its OpenAPI answers: HTML for the page itself;
# the errors before the page (the query's validation, the database) are the API's JSON.
TokenQuery = Annotated[str, Query(max_length=200, description="The token from the mail.")]
_HTML = {"text/html": {"schema": {"type": "string"}}}
_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}


def link_page_responses(*, form: str, invalid: str) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a page opened from a mailed link: 200 `form`, 410 `invalid`."""
    before = errors(422, 503, s422="`validation_error`: a `token` longer than 200 characters.")
    return {
        200: {"description": form, "content": _HTML},
        410: {"description": invalid, "content": _HTML},
        **{
            status: {"description": entry["description"], "content": _ERROR_BODY}
            for status, entry in before.items()
        },
    }


@dataclass(frozen=True, slots=True)
class LinkPage:
    """A page opened from a mailed link (the invitation, the reset): its template, the form it
    posts, and the two ways it is shown: the form for a live token, or why the link is dead."""

    template: str
    heading: str
    action: str  # where the form posts
    invalid_message: str
    subject: str  # the template's name for whom the link is for (`invited`, `account`)

    def invalid(self, request: Request) -> HTMLResponse:
        return render(
            request, self.template, status=410, heading=self.heading,
            problems=[self.invalid_message],
        )  # fmt: skip

    def form(
        self, request: Request, token: str, whom: object, *, status: int, problems: list[str]
    ) -> HTMLResponse:
        context = {self.subject: whom, "form": {"action": self.action, "token": token}}
        return render(
            request, self.template, status=status, heading=self.heading, problems=problems,
            **context,
        )  # fmt: skip
