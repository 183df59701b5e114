#!/usr/bin/env python3
"""Signature oracle for the tests' Aliyun fake: Alibaba Cloud's official Python SDK checks
each request cdnsign sends, not cdnsign's own signing code.

Reads one JSON object per line on stdin, answers one per line on stdout:

- {"kind": "v3", "method", "path", "query": {...}, "headers": {...} (the SignedHeaders,
  as received), "payload_hash", "ak", "secret"} -> {"authorization": "..."} from
  alibabacloud_tea_openapi.utils.Utils.get_authorization (ACS3-HMAC-SHA256);
- {"kind": "v1", "method", "params": {...} (every query and form parameter but
  Signature), "secret"} -> {"signature": "..."} from Utils.get_rpcsignature (RPC
  HMAC-SHA1, SignatureVersion 1.0).

Started once per fake by tests/it/purge_support/aliyun_fake/oracle.rs with the test venv.
"""

import json
import sys

from alibabacloud_tea_openapi.utils import Utils


class Request:
    """The attributes Utils.get_authorization reads from a tea request."""

    def __init__(self, method, path, query, headers):
        self.method = method
        self.pathname = path
        self.query = query
        self.headers = headers


def answer(q):
    if q["kind"] == "v3":
        r = Request(q["method"], q["path"], q["query"], q["headers"])
        auth = Utils.get_authorization(r, "ACS3-HMAC-SHA256", q["payload_hash"], q["ak"], q["secret"])
        return {"authorization": auth}
    if q["kind"] == "v1":
        return {"signature": Utils.get_rpcsignature(q["params"], q["method"], q["secret"])}
    return {"error": f"unknown kind {q.get('kind')!r}"}


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            out = answer(json.loads(line))
        except Exception as e:  # noqa: BLE001 - the fake reports any failure as a refusal
            out = {"error": repr(e)}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
