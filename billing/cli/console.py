"""What every command shares: the two consoles, progress lines and settings loading."""

from __future__ import annotations

from pydantic import ValidationError
from rich.console import Console

from billing.config import Settings
from billing.errors import ConfigError

out = Console()
err = Console(stderr=True)


def progress(text: str) -> None:
    """A dim progress line on stderr, so stdout stays the result."""
    err.print(f"[dim]{text}[/dim]", highlight=False)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment; a bad value becomes a one-line ConfigError."""
    try:
        settings = Settings()
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"setting {name}: {first['msg']}") from None
    return settings.model_copy(update=overrides) if overrides else settings
