"""What every console action shares: the posted form checked (CSRF, role), a confirmation
page before anything happens, and its fields read as one-line errors."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from starlette.datastructures import FormData
from starlette.responses import Response

from billing.errors import BillingError
from billing.states import Role
from billing.web.console.render import page
from billing.web.console.session import CSRF_FIELD, SignedIn, checked_form, require_role

CONFIRMED_FIELD = "confirmed"


class FieldError(BillingError):
    """A form field missing or not valid (422, shown on the page)."""


@dataclass(frozen=True)
class Posted:
    """A checked form: its fields, and whether the user already confirmed on the
    confirmation page."""

    form: FormData

    @property
    def confirmed(self) -> bool:
        return self.form.get(CONFIRMED_FIELD) == "yes"

    def text(self, name: str, label: str, *, required: bool = True) -> str:
        """The field's text, stripped; FieldError naming the field when required and empty."""
        value = self.form.get(name)
        text = value.strip() if isinstance(value, str) else ""
        if required and not text:
            raise FieldError(f"{label}: fill it in")
        return text

    def fields(self) -> list[tuple[str, str]]:
        """Every field but the CSRF token and the confirmation, in order (to post again)."""
        return [
            (name, value)
            for name, value in self.form.multi_items()
            if isinstance(value, str) and name not in (CSRF_FIELD, CONFIRMED_FIELD)
        ]


async def posted(request: Request, user: SignedIn, needed: Role) -> Posted:
    """The form of an action that needs `needed`: role first (403), then CSRF (403)."""
    require_role(user, needed)
    return Posted(await checked_form(request, user))


def confirmation(
    request: Request,
    user: SignedIn,
    form: Posted,
    *,
    title: str,
    consequences: list[str],
    back: str,
    button: str = "Confirm",
    danger: bool = False,
) -> Response:
    """The page that asks before an action: what will happen, the same fields posted again
    with `confirmed=yes`, and a way back that changes nothing."""
    return page(
        request,
        "confirm.html",
        user,
        title=title,
        consequences=consequences,
        action=request.url.path,
        fields=form.fields(),
        back=back,
        button=button,
        danger=danger,
    )
