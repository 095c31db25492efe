"""Full-text search over the organisation's traces: GET /api/v1/traces?q=."""

from __future__ import annotations

import uuid

from tests.helpers import OrgClient


async def found(org: OrgClient, q: str, **filters: str) -> set[str]:
    response = await org.get("/api/v1/traces", params={"q": q, **filters})
    assert response.status_code == 200, response.text
    return {item["trace_id"] for item in response.json()["items"]}


async def test_search_finds_words_and_phrases_in_input_and_output(
    org: OrgClient, other_org: OrgClient
) -> None:
    word = f"zq{uuid.uuid4().hex[:8]}"  # a word no other test's trace has
    in_output = await org.submit(output=f"The {word} dosage is 5 mg daily.")
    in_input = await org.submit(input=f"Tell me about {word} interactions", output="Ask your pharmacist.")
    both = await org.submit(
        input=f"{word} and warfarin?", output="Avoid combining them.", domain="healthcare"
    )
    other = await other_org.submit(output=f"{word} is mentioned here too.")

    assert await found(org, word) == {in_output, in_input, both}  # never the other organisation's
    assert await found(other_org, word) == {other}
    assert await found(org, word.upper()) == {in_output, in_input, both}  # case does not matter
    assert await found(org, f'"{word} dosage"') == {in_output}  # a phrase
    assert await found(org, f"{word} -pharmacist") == {in_output, both}  # a word excluded
    assert await found(org, f"{word} warfarin") == {both}  # every word must occur
    assert await found(org, word, domain="healthcare") == {both}  # with the other filters
    assert await found(org, f"{word}x") == set()

    first = await org.get("/api/v1/traces", params={"q": word, "limit": 2})
    rest = await org.get("/api/v1/traces", params={"q": word, "cursor": first.json()["next_cursor"]})
    paged = [item["trace_id"] for item in first.json()["items"] + rest.json()["items"]]
    assert sorted(paged) == sorted({in_output, in_input, both})


async def test_search_queries_are_validated(org: OrgClient) -> None:
    for q in ("", "x" * 201):
        response = await org.get("/api/v1/traces", params={"q": q})
        assert response.status_code == 422
        assert [d["field"] for d in response.json()["error"]["details"]] == ["query.q"]
    # Operators alone or stray quotes are words to websearch_to_tsquery, never an error.
    for q in ('"', "-", "a & b | !c", "'; drop table traces; --"):
        assert (await org.get("/api/v1/traces", params={"q": q})).status_code == 200, q
