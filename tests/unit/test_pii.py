"""Unit tests for the PII detectors (evaluators/pii.py)."""

from __future__ import annotations

import pytest

from evaluators.pii import MASKS, PII_KINDS, detect_pii, luhn_valid, placeholder, redact


def kinds(text: str) -> list[str]:
    return [match.kind for match in detect_pii(text)]


def found(text: str) -> list[tuple[str, str]]:
    return [(match.kind, text[match.start : match.end]) for match in detect_pii(text)]


def test_every_kind_has_a_typed_mask() -> None:
    assert set(MASKS) == set(PII_KINDS)
    assert placeholder("dob") == "<PERSON_DOB>"
    assert placeholder("credit_card") == "<CREDIT_CARD>"


@pytest.mark.parametrize("text", ["SSN 123-45-6789", "SSN 123 45 6789", "ssn:078-05-1120."])
def test_valid_ssn_detected(text: str) -> None:
    assert kinds(text) == ["ssn"]


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456",  # area 000
        "666-12-3456",  # area 666
        "912-12-3456",  # area 9xx
        "123-00-4567",  # group 00
        "123-45-0000",  # serial 0000
        "123-45 6789",  # mixed separators
        "1123-45-6789",  # part of a longer number
    ],
)
def test_invalid_ssn_rejected(text: str) -> None:
    assert "ssn" not in kinds(text)


def test_luhn() -> None:
    assert luhn_valid("4111 1111 1111 1111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111 1111 1111 1112")
    assert not luhn_valid("")


@pytest.mark.parametrize(
    "text",
    ["card 4111111111111111", "card 4111-1111-1111-1111", "amex 3782 822463 10005", "5500 0000 0000 0004"],
)
def test_luhn_valid_card_detected(text: str) -> None:
    assert kinds(text) == ["credit_card"]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",
        "id 1234567890123",
        "4111 1111 1111",
        "Your order number is 4111111111111112.",  # fails Luhn
        "Tracking 1234567812345678 shipped",  # fails Luhn
    ],
)
def test_luhn_invalid_or_short_card_rejected(text: str) -> None:
    assert "credit_card" not in kinds(text)


@pytest.mark.parametrize(
    "text",
    [
        "call (555) 123-4567",
        "call 555-123-4567 today",
        "call 555.123.4567",
        "+1 555 123 4567",
        "1-800-555-1234",
        "London office: +44 20 7946 0958",
    ],
)
def test_phone_detected(text: str) -> None:
    assert kinds(text) == ["phone"]


@pytest.mark.parametrize(
    "text",
    [
        "Take 500 mg twice a day",
        "What is 2+2?",
        "2+2 = 4",
        "In 2024 the guidance changed",
        "1000 mg every 4 to 6 hours",
        "order 5551234567",
        "2024-01-15",
        "between 100 and 200 mg",
        "Visit Date (03/14/2024)",
        "order 00482913 shipped",  # a number without an MRN label
        "take 2 tablets 3 times a day",
    ],
)
def test_plain_numbers_and_dates_are_not_pii(text: str) -> None:
    assert detect_pii(text) == []


def test_email_and_ip() -> None:
    assert kinds("write to a.b+c@ex-ample.co.uk!") == ["email"]
    assert found("a@b@c.com") == [("email", "b@c.com")]
    assert kinds("server 192.168.1.254.") == ["ip_address"]
    assert kinds("bad 256.1.1.1") == []
    assert kinds("leading zero 010.1.1.1") == []
    assert kinds("version 1.2.3.4.5") == []


@pytest.mark.parametrize(
    "text, value",
    [
        ("MRN: 00482913", "00482913"),
        ("mrn 1234567", "1234567"),
        ("Medical record number is A1234567", "A1234567"),
        ("patient ID #AB-9876543", "AB-9876543"),
    ],
)
def test_mrn_needs_a_label(text: str, value: str) -> None:
    assert found(text) == [("mrn", value)]


@pytest.mark.parametrize(
    "text, value",
    [
        ("DOB: 04/12/1962", "04/12/1962"),
        ("date of birth 1962-04-12.", "1962-04-12"),
        ("born on 12 May 1990", "12 May 1990"),
        ("Patient Jane Doe (March 3, 1961) was seen", "March 3, 1961"),
    ],
)
def test_date_of_birth_next_to_a_label_or_a_name(text: str, value: str) -> None:
    assert found(text) == [("dob", value)]


def test_dates_without_label_or_name_are_not_a_dob() -> None:
    assert detect_pii("The guideline changed on 04/12/2021 (see 05/01/2021).") == []
    assert detect_pii("Follow Up (04/05/2024)") == []


@pytest.mark.parametrize(
    "text, value",
    [
        (
            "lives at 1600 Pennsylvania Avenue NW, Washington, DC 20500.",
            "1600 Pennsylvania Avenue NW, Washington, DC 20500",
        ),
        ("send it to 12 Oak St, Apt 4, Springfield, IL 62704", "12 Oak St, Apt 4, Springfield, IL 62704"),
        ("meet at 350 5th Avenue", "350 5th Avenue"),
    ],
)
def test_street_address(text: str, value: str) -> None:
    assert found(text) == [("address", value)]


def test_lower_case_prose_is_not_an_address() -> None:
    assert detect_pii("take 2 tablets on the main road") == []


def test_overlapping_matches_keep_longer_one() -> None:
    # "+1 555 123 4567" is matched by two phone patterns; one match remains.
    matches = detect_pii("+1 555 123 4567")
    assert len(matches) == 1
    assert (matches[0].start, matches[0].end) == (0, 15)


def test_redact_placeholders_and_offsets() -> None:
    text = "mail x@y.org, ssn 123-45-6789, ip 8.8.8.8"
    matches = detect_pii(text)
    assert [text[m.start : m.end] for m in matches] == ["x@y.org", "123-45-6789", "8.8.8.8"]
    assert redact(text, matches) == "mail <EMAIL>, ssn <SSN>, ip <IP_ADDRESS>"
    assert redact("nothing here", []) == "nothing here"


def test_many_matches_are_resolved_in_linear_time() -> None:
    text = "a@b.co " * 50_000 + "(555) 123-4567 " * 20_000
    matches = detect_pii(text)
    assert len(matches) == 70_000
