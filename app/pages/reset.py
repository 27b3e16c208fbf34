"""The reset page: `GET /password/reset?token=...` (the link in the reset mail) and its form's
`POST /password/reset/form`, which calls the same `RecoveryService.reset` as the JSON
`POST /admin/password/reset`.

As the accept page (`app.pages.invitations`): the link is checked read-only before the form is
shown; 410 for every token that is not a live reset's (missing and malformed ones too), 422 for
the password rules or a confirmation that differs, 200 for the form and the success page. The
token travels only in the URL, the hidden field and the body; the page headers (CSP without
script, no-store, no-referrer) are `app.pages.web`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from app.deps import Meta, Recovery
from app.kit.errors import AppError
from app.pages.web import (
    BadForm,
    LinkPage,
    TokenQuery,
    link_page_responses,
    password_problems,
    read_form,
    render,
)
from app.recovery.service import RecoveryService, ResetTokenInvalid
from app.tenancy.lease import OperationLost

router = APIRouter(include_in_schema=False)
page = APIRouter(tags=["pages"])

FORM_ACTION = "/password/reset/form"
HEADING = "Reset your password"
INVALID = (
    "This password-reset link does not work any more: it was already used, or it has expired. "
    "Ask for a new one from the login page."
)
RETRY = "The service was interrupted. Please try again."
UNEXPECTED = "The password could not be changed. Please try again later."


@dataclass(frozen=True, slots=True)
class Account:
    email: str
    organization: str


async def _account(recovery: RecoveryService, token: str) -> Account | None:
    """Whose live reset `token` is (None: not a live reset's)."""
    found = await recovery.account_of(token)
    return None if found is None else Account(email=found[0], organization=found[1])


LINK_PAGE = LinkPage("reset.html", HEADING, FORM_ACTION, INVALID, subject="account")


@page.get(
    "/password/reset",
    response_class=HTMLResponse,
    responses=link_page_responses(
        form="The form to choose a new password.",
        invalid="Why the link does not work (used, expired, unknown).",
    ),
)
async def reset_page(
    request: Request,
    recovery: Recovery,
    token: TokenQuery = "",
) -> HTMLResponse:
    """The reset mail's link: an HTML page (no JavaScript needed) where the member chooses a
    new password; it posts to `/password/reset/form`."""
    account = await _account(recovery, token)
    if account is None:
        return LINK_PAGE.invalid(request)
    return LINK_PAGE.form(request, token, account, status=200, problems=[])


@router.post(FORM_ACTION, response_class=HTMLResponse)
async def reset_form(request: Request, recovery: Recovery, meta: Meta) -> HTMLResponse:
    """The form's answer: the password is changed (the success page), or why not."""
    try:
        form = await read_form(request, "token", "password", "password_confirm")
    except BadForm:
        problem = "The form could not be read. Open the link from your mail again."
        return render(request, "reset.html", status=400, heading=HEADING, problems=[problem])
    token = form["token"]
    problems = password_problems(form["password"], form["password_confirm"])
    if problems:
        account = await _account(recovery, token)
        if account is None:
            return LINK_PAGE.invalid(request)  # the password would not help: say so first
        return LINK_PAGE.form(request, token, account, status=422, problems=problems)
    try:
        await recovery.reset(token, form["password"], meta=meta)
    except ResetTokenInvalid:
        return LINK_PAGE.invalid(request)
    except OperationLost as exc:
        return render(request, "reset.html", status=exc.status, heading=HEADING, problems=[RETRY])
    except AppError as exc:
        return render(
            request, "reset.html", status=exc.status, heading=HEADING, problems=[UNEXPECTED]
        )
    return render(request, "reset.html", status=200, heading="Password changed", done=True)
