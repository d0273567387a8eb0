"""The msgspec fast path reads a page only when the pydantic contract accepts it, and then with
exactly the values the contract gives (Decimals to the digit, integers of any size)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from pydantic import ValidationError

from billing.usage.contract import UsagePageModel
from billing.usage.fast_contract import decode_page, page_from_model


def page_with(result: str) -> bytes:
    bucket = f'{{"object":"bucket","start_time":1,"end_time":2,"results":[{result}]}}'
    return f'{{"object":"page","data":[{bucket}],"has_more":false}}'.encode()


RESULTS = [
    '{"org_id":"o","peak_memory_mib":1234.567890123456789}',
    '{"org_id":"o","peak_memory_mib":1E+2}',
    '{"org_id":"o","peak_memory_mib":1.10}',
    '{"org_id":"o","peak_memory_mib":-0}',
    '{"org_id":"o","peak_memory_mib":-0.0}',
    '{"org_id":"o","peak_memory_mib":1e400}',
    '{"org_id":"o","peak_memory_mib":"12.5"}',
    '{"org_id":"o","peak_memory_mib":" 1_000 "}',
    '{"org_id":"o","peak_memory_mib":"NaN"}',
    '{"org_id":"o","peak_memory_mib":"Infinity"}',
    '{"org_id":"o","peak_memory_mib":NaN}',
    '{"org_id":"o","peak_memory_mib":-1.5}',
    '{"org_id":"o","duration_ms":99999999999999999999999999}',
    '{"org_id":"o","duration_ms":-1}',
    '{"org_id":"o","duration_ms":1.0}',
    '{"org_id":"o","duration_ms":true}',
    '{"org_id":"o","duration_ms":"3"}',
    '{"org_id":"o","duration_ms":null}',
    '{"org_id":"o","reserved_memory_mib":null,"user_id":null}',
    '{"org_id":7}',
    '{"org_id":"o","session_kind":"gpu"}',
    '{"org_id":"o","operation":"turn","provider":"p","extra":[1,{"x":NaN}]}',
    '{"org_id":"o","object":"something.else"}',
    '{"org_id":"a","org_id":"b"}',
]


@pytest.mark.parametrize("result", RESULTS)
def test_a_page_read_fast_is_the_page_the_contract_reads(result: str) -> None:
    body = page_with(result)
    fast = decode_page(body)
    try:
        model = UsagePageModel.model_validate(json.loads(body, parse_float=Decimal))
    except ValidationError:
        assert fast is None, "the fast path accepted a page the contract refuses"
        return
    if fast is not None:
        strict = page_from_model(model)
        assert fast == strict
        fast_result, strict_result = fast.data[0].results[0], strict.data[0].results[0]
        assert repr(fast_result.peak_memory_mib) == repr(strict_result.peak_memory_mib)


def test_invalid_json_is_left_to_the_json_parser() -> None:
    assert decode_page(b'{"object": "page", "data": [') is None
    assert decode_page(b"") is None
