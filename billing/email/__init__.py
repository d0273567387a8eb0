"""Statement email: messages, one Transport (smtp, file, console, none), the outbox sender."""
