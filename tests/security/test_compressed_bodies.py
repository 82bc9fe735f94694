"""Compressed request bodies against a real server: a gzip or deflate stream must be complete and
alone. A cut-off stream is never scored on the rows that survived, and bytes after its end (a second
gzip member, or anything appended) are not ignored: both are 400, and nothing is scored."""

from __future__ import annotations

import gzip
import zlib

import requests

CSV = b"a,b\n" + b"".join(b"%d,1\n" % (2 * i + 1) for i in range(2000))  # odd: the model refuses 666


def post(url: str, body: bytes, encoding: str) -> requests.Response:
    return requests.post(url + "/predict", data=body, timeout=30,
                         headers={"Content-Type": "text/csv", "Content-Encoding": encoding})


def test_truncated_or_trailing_compressed_bodies_are_400(sum_bundle, live_server) -> None:  # type: ignore[no-untyped-def]
    """The whole gzip/deflate body scores all 2,000 rows; the same body cut short (by 1 byte or in the
    middle) or followed by a second gzip member or junk is 400 malformed_body naming the problem."""
    whole = gzip.compress(CSV)
    deflated = zlib.compress(CSV)
    with live_server(sum_bundle()) as server:
        ok = post(server.url, whole, "gzip")
        assert ok.status_code == 200, ok.text
        assert [p["sum"] for p in ok.json()["predictions"]] == [2.0 * i + 2 for i in range(2000)]
        assert post(server.url, deflated, "deflate").status_code == 200
        cases = {
            "gzip cut by one byte": (whole[:-1], "gzip", "truncated"),
            "gzip cut in the middle": (whole[: len(whole) // 2], "gzip", "truncated"),
            "deflate cut in the middle": (deflated[: len(deflated) // 2], "deflate", "truncated"),
            "two gzip members": (whole + gzip.compress(b"9,9\n"), "gzip", "after the end"),
            "junk after gzip": (whole + b"junk", "gzip", "after the end"),
            "junk after deflate": (deflated + b"junk", "deflate", "after the end"),
        }
        for name, (body, encoding, words) in cases.items():
            r = post(server.url, body, encoding)
            assert r.status_code == 400, (name, r.status_code, r.text[:200])
            assert r.json()["error"] == "malformed_body" and words in r.json()["message"], (name, r.text)
        metrics = requests.get(server.url + "/metrics").text
    rows = [line for line in metrics.splitlines() if line.startswith("scorer_rows_scored_total")]
    assert rows == ["scorer_rows_scored_total 4000.0"], rows  # only the two whole bodies were scored
