"""The BILLING_WEBHOOKS file (every problem as file:line: field: message), the request body and
its signature, and the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from billing.catalog.webhooks import check_webhooks, load_webhooks
from billing.close.preflight import check_webhook_endpoints
from billing.config import Settings
from billing.errors import ConfigError
from billing.finance.webhooks import retry_delay
from billing.hooks.sender import body_of, signature_header
from billing.states import WebhookEventType

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webhooks.yaml"
SECRET = "0123456789abcdef-secret"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hooks.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_file_loads_with_its_secret_variable_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BILLING_WEBHOOK_SECRET_ERP", "a-secret-from-the-environment")
    erp, chat = load_webhooks(EXAMPLE)
    assert erp.name == "erp"
    assert erp.secret.get_secret_value() == "a-secret-from-the-environment"
    assert erp.events == {
        WebhookEventType.INVOICE_FINALIZED,
        WebhookEventType.INVOICE_VOIDED,
        WebhookEventType.CREDIT_NOTE_CREATED,
    }
    assert chat.events == frozenset(WebhookEventType)  # "*"
    assert "a-secret" not in repr(erp)  # never printed


def test_every_problem_names_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_SECRET_VARIABLE", raising=False)
    monkeypatch.setenv("A_LONG_ENOUGH_SECRET", SECRET)
    path = write(
        tmp_path,
        "endpoints:\n"  # 1
        "  - name: erp\n"  # 2
        "    url: ftp://erp.example.com/\n"  # 3
        "    secret: short\n"  # 4
        "    events: [invoice.finalized, invoice.paid]\n"  # 5
        "  - name: chat\n"  # 6
        "    url: https://chat.example.com/\n"  # 7
        "    secret_env: NO_SUCH_SECRET_VARIABLE\n"  # 8
        "    events: everything\n"  # 9
        "  - name: both\n"  # 10
        "    url: https://x.example.com/\n"  # 11
        f"    secret: {SECRET}\n"  # 12
        "    secret_env: A_LONG_ENOUGH_SECRET\n"  # 13
        "    events: '*'\n"  # 14
        "    retries: 3\n",  # 15
    )
    problems = check_webhooks(path)
    assert problems == [
        f"{path}:3: field endpoints.0.url: must be an http:// or https:// URL with a host",
        f"{path}:4: field endpoints.0.secret: must be at least 16 characters",
        f"{path}:5: field endpoints.0.events.1: Input should be 'invoice.finalized', "
        "'invoice.sent', 'invoice.voided', 'credit_note.created', 'run.succeeded', "
        "'run.failed' or 'budget.threshold_reached'",
        f"{path}:8: field endpoints.1.secret_env: environment variable "
        "NO_SUCH_SECRET_VARIABLE is not set (or is empty)",
        f'{path}:9: field endpoints.1.events: must be "*" or a list of event types '
        "(invoice.finalized, invoice.sent, invoice.voided, credit_note.created, "
        "run.succeeded, run.failed, budget.threshold_reached)",
        f"{path}:15: field endpoints.2.retries: Extra inputs are not permitted",
    ]
    with pytest.raises(ConfigError) as raised:
        load_webhooks(path)
    assert str(raised.value) == problems[0] + " (and 5 more)"
    assert "short" not in " ".join(problems)  # a secret is never echoed


def test_one_secret_and_unique_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "endpoints:\n"
        "  - name: erp\n"
        "    url: https://a.example.com/\n"
        "    events: '*'\n"
        "  - name: erp\n"
        "    url: https://b.example.com/\n"
        f"    secret: {SECRET}\n"
        "    events: [run.failed]\n",
    )
    assert check_webhooks(path) == [
        f"{path}:2: field endpoints.0: give exactly one of secret and secret_env"
    ]
    path.write_text(
        path.read_text().replace("    events: '*'\n", f"    secret: {SECRET}\n    events: '*'\n", 1)
    )
    assert check_webhooks(path) == [
        f"{path}:6: field endpoints.1.name: endpoint 'erp' is listed twice (first as endpoints.0)"
    ]


def test_missing_empty_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert check_webhooks(missing) == [
        f"{missing}: webhook endpoints file not found; fix BILLING_WEBHOOKS or unset it"
    ]
    assert load_webhooks(write(tmp_path, "")) == ()
    assert check_webhooks(write(tmp_path, "endpoints: [\n")) == [
        f"{tmp_path / 'hooks.yaml'}:2: not valid YAML (did not find expected node content)"
    ]
    assert check_webhooks(write(tmp_path, "- erp\n")) == [
        f"{tmp_path / 'hooks.yaml'}:1: field (top level): must be a mapping with an endpoints: list"
    ]


def test_the_preflight_checks_the_file_only_when_set(tmp_path: Path) -> None:
    check_webhook_endpoints(Settings(_env_file=None))
    bad = write(tmp_path, "endpoints:\n  - name: x\n    url: nowhere\n")
    settings = Settings(_env_file=None, webhooks=bad)
    with pytest.raises(ConfigError, match=rf"^{bad}:3: field endpoints.0.url: "):
        check_webhook_endpoints(settings)


def test_the_body_keeps_the_stored_data_and_the_signature_is_stripes_scheme() -> None:
    created = datetime(2026, 11, 2, 6, 0, 1, tzinfo=UTC)
    data = json.dumps({"number": "INV-2026-000001", "org_id": "<script>", "total": "12.30"})
    body = body_of("evt_" + "a" * 32, "invoice.finalized", created, data)
    assert json.loads(body) == {
        "id": "evt_" + "a" * 32,
        "type": "invoice.finalized",
        "created": "2026-11-02T06:00:01Z",
        "data": {"number": "INV-2026-000001", "org_id": "<script>", "total": "12.30"},
    }
    assert body.endswith(data.encode() + b"}")
    header = signature_header(SECRET, 1_790_000_000, body)
    expected = hmac.new(SECRET.encode(), b"1790000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1790000000,v1={expected}"


def test_retries_back_off_from_30_seconds_doubling_up_to_six_hours() -> None:
    assert [retry_delay(n) for n in range(1, 6)] == [
        timedelta(seconds=30),
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(minutes=4),
        timedelta(minutes=8),
    ]
    assert retry_delay(11) == timedelta(hours=6)
    assert retry_delay(500) == timedelta(hours=6)


def test_beat_delivers_webhooks_every_minute_on_the_email_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from workers import tasks
    from workers.celery_app import EMAIL_QUEUE, ROUTES, beat_schedule, create_app

    settings = Settings(_env_file=None)
    entry = beat_schedule(settings)["deliver-webhooks"]
    assert entry["task"] == "workers.tasks.deliver_webhooks"
    assert entry["schedule"] == timedelta(minutes=1)
    assert entry["options"] == {"expires": 60}
    assert ROUTES[entry["task"]] == EMAIL_QUEUE
    app = create_app(settings)
    assert app.amqp.router.route({}, entry["task"])["queue"].name == EMAIL_QUEUE
    assert tasks.deliver_webhooks.name == entry["task"]
    # Without BILLING_WEBHOOKS the task does nothing (and opens no ledger).
    monkeypatch.setattr(tasks, "get_settings", lambda: settings)
    assert tasks.deliver_webhooks.run() == {
        "queued": 0,
        "delivered": 0,
        "retrying": 0,
        "failed": 0,
        "deferred": 0,
    }
