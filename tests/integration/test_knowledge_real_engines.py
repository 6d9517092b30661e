"""A fact that exists only in an ingested document reaches Shadow first, Active on swap."""

from __future__ import annotations

import httpx
import pytest

from twinloop.settings import Settings

pytestmark = pytest.mark.integration

DOCUMENT = (
    "Office memo. The Quorvath Agreement was signed in the city of Zelmora. "
    "Zelmora is where the Quorvath Agreement was signed, in the spring of 2031."
)
QUESTION = "In which city was the Quorvath Agreement signed?"


def _ask(url: str, headers: dict[str, str], target: str = "active") -> dict[str, object]:
    body = {"question": QUESTION, "domain": "law", "max_tokens": 24, "target": target}
    response = httpx.post(f"{url}/answer", json=body, headers=headers, timeout=120)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def test_an_ingested_fact_is_answered_by_shadow_then_active_and_gone_after_rollback(
    two_engine_gateway: str, gateway_settings: Settings
) -> None:
    url = two_engine_gateway
    admin = {"Authorization": f"Bearer {gateway_settings.admin_token.get_secret_value()}"}
    before = _ask(url, admin)
    assert "Zelmora" not in str(before["answer"])

    item = {"type": "document", "id": "memo-quorvath", "domain": "law", "text": DOCUMENT}
    ingested = httpx.post(f"{url}/ingest", json={"items": [item]}, headers=admin, timeout=120)
    assert ingested.status_code == 202, ingested.text
    assert ingested.json()["items"][0]["status"] == "added"

    active = _ask(url, admin)
    shadow = _ask(url, admin, target="shadow")
    assert active["contexts"] == [] and "Zelmora" not in str(active["answer"])
    assert shadow["contexts"] and shadow["contexts"][0]["doc_id"] == "memo-quorvath"  # type: ignore[index]
    assert "Zelmora" in str(shadow["answer"])

    latest = {"generation": "latest"}
    httpx.post(f"{url}/swap", json=latest, headers=admin, timeout=60).raise_for_status()
    assert "Zelmora" in str(_ask(url, admin)["answer"])

    httpx.post(f"{url}/rollback", json=latest, headers=admin, timeout=60).raise_for_status()
    after = _ask(url, admin)
    assert after["contexts"] == [] and "Zelmora" not in str(after["answer"])
