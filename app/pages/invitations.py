"""The accept page: `GET /invitations/accept?token=...` (the link in the invitation mail) and its
form's `POST /invitations/accept/form`, which calls the same `TeamService.accept` as the JSON
`POST /invitations/accept`.

The link is checked before the form is shown (read-only: `TeamService.peek`), so whoever
follows a used, revoked or expired link learns it before choosing a password. Statuses follow
the JSON API: 410 for every token that is not a live invitation's (missing and malformed ones
too: one answer for all), 409 `email_taken` / `seat_limit`, 422 for the password rules (or a
confirmation that differs); 200 for the form and for the success page.

The token travels only in the URL, the hidden form field and the body: never in the page's
text or a log line (the access log writes the route template, not the query).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse

from app.deps import Meta, Teams
from app.kit.errors import (
    AppError,
    EmailTaken,
    InvitationInvalid,
    NotFound,
    OperationInProgress,
    OrganizationSuspended,
    SeatLimit,
)
from app.members.service import InvitationView as Invited
from app.pages.web import (
    BadForm,
    LinkPage,
    TokenQuery,
    link_page_responses,
    password_problems,
    read_form,
    render,
)
from app.tenancy.lease import OperationLost

router = APIRouter(include_in_schema=False)
# The link's page is in the OpenAPI schema (an HTML answer), as the contract names its path; the
# form's own route is not (it is the page's, not the API's).
page = APIRouter(tags=["pages"])

FORM_ACTION = "/invitations/accept/form"
HEADING = "Accept the invitation"

INVALID = (
    "This invitation link does not work any more: it was already used, revoked, or it has "
    "expired. Ask the person who invited you for a new invitation."
)
# What each error of the service means to the invitee, and the status of the page. The
# organization gone meanwhile (`NotFound`) is, to the invitee, one more invalid invitation.
MESSAGES: list[tuple[type[AppError], int | None, str]] = [
    (InvitationInvalid, None, INVALID),
    (NotFound, 410, INVALID),
    (
        EmailTaken,
        None,
        "This email address already belongs to an account, so it cannot join through this "
        "invitation. Log in with it, or ask for an invitation to another address.",
    ),
    (
        SeatLimit,
        None,
        "The organization has no free seat right now. Ask an owner or admin to make room, "
        "then open the link from your mail again.",
    ),
    (OperationInProgress, None, "The organization is being changed right now. Please try again."),
    (
        OrganizationSuspended,
        None,
        "This organization is suspended for now, so nobody can join it. Open the link from "
        "your mail again once it is restored (while the invitation is still valid).",
    ),
    (OperationLost, None, "The service was interrupted. Please try again."),
]
UNEXPECTED = "The invitation could not be accepted. Please try again later."
# Errors after which the same form may simply be sent again (it is shown again).
RETRY = (OperationInProgress, OperationLost)


def explain(exc: AppError) -> tuple[int, str]:
    """The page's status and message for an error of the service (never its internals)."""
    for kind, status, message in MESSAGES:
        if isinstance(exc, kind):
            return status or exc.status, message
    return exc.status, UNEXPECTED


LINK_PAGE = LinkPage("accept.html", HEADING, FORM_ACTION, INVALID, subject="invited")


@page.get(
    "/invitations/accept",
    response_class=HTMLResponse,
    responses=link_page_responses(
        form="The form to choose a password.",
        invalid="Why the link does not work (used, revoked, expired, unknown).",
    ),
)
async def accept_page(
    request: Request,
    teams: Teams,
    token: TokenQuery = "",
) -> HTMLResponse:
    """The invitation mail's link: an HTML page (no JavaScript needed) where the invitee
    chooses a password; it posts to `/invitations/accept/form`."""
    invited = await teams.peek(token)
    if invited is None:
        return LINK_PAGE.invalid(request)
    return LINK_PAGE.form(request, token, invited, status=200, problems=[])


@router.post(FORM_ACTION, response_class=HTMLResponse)
async def accept_form(request: Request, teams: Teams, meta: Meta) -> HTMLResponse:
    """The form's answer: the member is made (the success page), or why not."""
    try:
        form = await read_form(request, "token", "password", "password_confirm")
    except BadForm:
        problem = "The form could not be read. Open the link from your mail again."
        return render(request, "accept.html", status=400, heading=HEADING, problems=[problem])
    token = form["token"]
    problems = password_problems(form["password"], form["password_confirm"])
    if problems:
        invited = await teams.peek(token)
        if invited is None:
            return LINK_PAGE.invalid(request)  # the password would not help: say so first
        return LINK_PAGE.form(request, token, invited, status=422, problems=problems)
    try:
        joined = await teams.join(token, form["password"], meta=meta)
    except AppError as exc:
        status, message = explain(exc)
        invited = await teams.peek(token) if isinstance(exc, RETRY) else None
        if invited is not None:
            return LINK_PAGE.form(request, token, invited, status=status, problems=[message])
        return render(request, "accept.html", status=status, heading=HEADING, problems=[message])
    name = await teams.organization_name(joined.organization_id)
    shown = Invited(name or "the organization", joined.member.role, joined.member.email)
    return render(request, "accept.html", status=200, heading="Invitation accepted", joined=shown)
