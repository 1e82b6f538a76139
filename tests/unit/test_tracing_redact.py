"""Redaction of captured text (gateway/redact.py) on a corpus of what support traffic carries:
each line must lose what it should and keep what it should."""

from __future__ import annotations

import pytest

from gateway.redact import KINDS, Redactor, luhn_ok

# (text, what must be gone from the redacted text, the placeholder that must appear)
FOUND = [
    # emails
    ("write to jane.doe@example.com please", "jane.doe@example.com", "[EMAIL]"),
    ("cc: J.Smith+billing@mail.co.uk, thanks", "J.Smith+billing@mail.co.uk", "[EMAIL]"),
    ("<support_team@sub.domain.example.org>", "support_team@sub.domain.example.org", "[EMAIL]"),
    # phone numbers
    ("call me at +1 415 555 0132 after 5", "415 555 0132", "[PHONE]"),
    ("my number is (415) 555-0132", "555-0132", "[PHONE]"),
    ("office: 415-555-0132", "415-555-0132", "[PHONE]"),
    ("UK mobile +44 7700 900123", "7700 900123", "[PHONE]"),
    ("ring +49 (30) 1234 5678 tomorrow", "1234 5678", "[PHONE]"),
    ("text 415.555.0132", "415.555.0132", "[PHONE]"),
    ("+33612345678 is my French line", "+33612345678", "[PHONE]"),
    # payment cards (Luhn-valid test numbers)
    ("card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111", "[CARD]"),
    ("visa 4242424242424242", "4242424242424242", "[CARD]"),
    ("mc 5555-5555-5555-4444 please refund", "5555-5555-5555-4444", "[CARD]"),
    ("amex 378282246310005", "378282246310005", "[CARD]"),
    # keys and tokens
    ("my key is sk-proj-abcdefghijklmnopqrstuvwxyz123456", "abcdefghijklmnopqrstuvwxyz", "[KEY]"),
    ("sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx-yz0123", "AbCdEfGhIjKlMnOpQrStUvWx", "[KEY]"),
    ("aws AKIAIOSFODNN7EXAMPLE leaked", "AKIAIOSFODNN7EXAMPLE", "[KEY]"),
    ("token ghp_0123456789abcdefghijABCDEFGHIJ012345", "ghp_0123456789abcdefghij", "[KEY]"),
    ("slack xoxb-123456789012-abcdefABCDEF", "xoxb-123456789012-abcdefABCDEF", "[KEY]"),
    ("google AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyA1234567890abcdefghij", "[KEY]"),
    (
        "Authorization: Bearer abcDEF0123456789ghiJKL.xyz",
        "abcDEF0123456789ghiJKL",
        "[KEY]",
    ),
    ("api_key=5f2b9c1e8d7a6b5c4d3e", "5f2b9c1e8d7a6b5c4d3e", "[KEY]"),
    ('{"password": "hunter2hunter2"}', "hunter2hunter2", "[KEY]"),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
        "[KEY]",
    ),
]

# text that must come through unchanged: ids, amounts, dates, versions, plain words
KEPT = [
    "order 1234567 shipped on 2026-12-07",
    "invoice #20261207-0042 for $1,299.00",
    "tracking number 1Z999AA10123456784",
    "ticket 4111111111111112 (not a card: fails Luhn)",
    "the model is llama-3.1-8b at version 2.60.0",
    "reply within 24 hours, ref 55501",
    "use the sk- prefix for keys",
    "email support at the help page",
    "password reset link sent",
]


@pytest.mark.parametrize(("text", "gone", "placeholder"), FOUND)
def test_each_kind_is_found(text: str, gone: str, placeholder: str) -> None:
    out = Redactor().redact(text)
    assert gone not in out and placeholder in out, out


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_text_is_kept(text: str) -> None:
    assert Redactor().redact(text) == text


def test_a_message_with_everything_keeps_its_words() -> None:
    text = (
        "Hi, I'm Jane (jane@example.com, +1 415 555 0132). Card 4111 1111 1111 1111 was "
        "charged twice for order 1234567; my key sk-abcdefghijklmnopqrstu is in the app."
    )
    out = Redactor().redact(text)
    assert out == (
        "Hi, I'm Jane ([EMAIL], [PHONE]). Card [CARD] was charged twice for order 1234567; "
        "my key [KEY] is in the app."
    )


def test_only_the_kinds_asked_for_and_extra_patterns() -> None:
    text = "jane@example.com 415-555-0132 customer C-123456"
    assert Redactor(["email"]).redact(text) == "[EMAIL] 415-555-0132 customer C-123456"
    assert (
        Redactor([], [r"C-\d{6}"]).redact(text)
        == "jane@example.com 415-555-0132 customer [REDACTED]"
    )
    assert set(KINDS) == {"email", "phone", "card", "key"}
    with pytest.raises(ValueError, match="unknown redaction kinds"):
        Redactor(["ssn"])


def test_luhn() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112")
