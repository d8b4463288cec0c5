"""JSONLStore: what long jobs (eval, curate, filter) resume from."""

import json

from lightning_longrl.data.jsonl_store import JSONLStore


def test_store_resumes_and_survives_odd_text(tmp_path):
    path = tmp_path / "rows.jsonl"
    odd = "line\u2028separator \x85 and \u2029 paragraph"  # str.splitlines would split these
    with JSONLStore(path, key=lambda r: r["id"]) as store:
        store.append({"id": 1, "text": odd})
        store.append({"id": 2, "text": "plain"})
    reopened = JSONLStore(path, key=lambda r: r["id"])
    assert len(reopened) == 2 and reopened.get(1)["text"] == odd
    reopened.close()
    # a crash in the middle of a write: the cut line is dropped, the rest is kept
    path.write_text(path.read_text() + '{"id": 3, "te')
    with JSONLStore(path, key=lambda r: r["id"]) as store:
        assert 3 not in store and len(store) == 2
        store.append({"id": 3, "text": "again"})
    assert [json.loads(line)["id"] for line in path.read_text().split("\n") if line] == [1, 2, 3]
    # a complete last row that only lacks its newline (a hand edit) is kept
    path.write_text(path.read_text() + '{"id": 4, "text": "edited"}')
    with JSONLStore(path, key=lambda r: r["id"]) as store:
        assert store.get(4)["text"] == "edited"
        store.append({"id": 5, "text": "next"})
    assert [json.loads(line)["id"] for line in path.read_text().split("\n") if line] == [1, 2, 3, 4, 5]
