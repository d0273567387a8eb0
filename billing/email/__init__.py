"""Statement email: messages, one transport interface (SMTP, file, console), the outbox sender."""
