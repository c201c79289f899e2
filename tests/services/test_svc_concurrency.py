"""Concurrent writers with retries record every outcome exactly once (small; experiments/services/reliability.py is
8 x 10,000 on a live server)."""

import threading
from collections import Counter

from fastapi.testclient import TestClient
from svc_helpers import auth


def test_concurrent_clients_with_resent_requests_lose_and_duplicate_nothing(api):
    experiment = api.post(
        "/v1/workspaces/alpha/experiments",
        json={"name": "c", "variants": ["a", "b"], "auto_complete": False},
        headers=auth(),
    ).json()
    url = f"/v1/workspaces/alpha/experiments/{experiment['id']}/outcomes"
    failures = []

    def work(index: int) -> None:
        with TestClient(api.app) as client:
            for i in range(12):
                unit = f"c{index}-{i}"
                body = {"variant": "ab"[i % 2], "value": int(i % 3 == 0), "unit": unit}
                for _ in range(2 if i % 4 == 0 else 1):  # every fourth request is sent twice
                    response = client.post(url, json=body, headers={**auth(), "Idempotency-Key": unit})
                    if response.status_code != 201:
                        failures.append(response.text)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    items = api.get(url, params={"limit": 500}, headers=auth()).json()["items"]
    units = Counter(item["unit"] for item in items)
    assert len(units) == 48 and set(units.values()) == {1}
    variants = api.get(f"/v1/workspaces/alpha/experiments/{experiment['id']}", headers=auth()).json()["variants"]
    assert sum(v["count"] for v in variants) == 48
