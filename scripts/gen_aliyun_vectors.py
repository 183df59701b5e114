#!/usr/bin/env python3
"""Generates tests/fixtures/aliyun_vectors.json: Alibaba Cloud request signatures made by the
official Python SDKs, with nonce, time and user agent fixed, so our hand-written signer
(src/purge/aliyun.rs) is pinned to what the SDKs send.

- RPC signature (SignatureVersion 1.0, HMAC-SHA1): aliyun-python-sdk-core's
  aliyunsdkcore.auth.composer.rpc_signature_composer.get_signed_url.
- ACS3-HMAC-SHA256 (V3): alibabacloud-tea-openapi's Client.do_request, stopped right before
  it would send; the request it built (method, path, query, headers with Authorization,
  body) is recorded.

Run with the test venv (scripts/setup.sh, pinned in scripts/requirements-test.txt):

    .venv/bin/python scripts/gen_aliyun_vectors.py > tests/fixtures/aliyun_vectors.json
"""

import json
import sys
from importlib.metadata import version

AK, SECRET = "testid", "testsecret"
CDN_AK, CDN_SECRET = "LTAI5tCdnsignVectors", "cdnsign/vectors+secret=="
TIMESTAMP = "2026-01-02T03:04:05Z"
NONCE = "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"
USER_AGENT = "cdnsign-vectors/1"


def v1_vectors():
    from aliyunsdkcore.auth.composer import rpc_signature_composer as rpc
    from aliyunsdkcore.utils import parameter_helper as helper

    out = []

    def case(name, method, query, body, fmt, ak, secret, timestamp):
        helper.get_iso_8061_date = lambda: timestamp
        helper.get_uuid = lambda: NONCE
        url, string_to_sign = rpc.get_signed_url(dict(query), ak, secret, fmt, method, dict(body))
        from urllib.parse import parse_qsl

        params = dict(parse_qsl(url.split("?", 1)[1], keep_blank_values=True))
        signature = params.pop("Signature")
        signed = dict(params)
        signed.update(body)
        out.append(
            {
                "name": name,
                "method": method,
                "access_key_id": ak,
                "secret": secret,
                "signed_params": signed,
                "string_to_sign": string_to_sign,
                "signature": signature,
            }
        )

    # The published example (DescribeRegions, 2016-02-23T12:46:24Z).
    case(
        "published DescribeRegions",
        "GET",
        {"Action": "DescribeRegions", "Version": "2014-05-26"},
        {},
        "XML",
        AK,
        SECRET,
        "2016-02-23T12:46:24Z",
    )
    case(
        "RefreshObjectCaches, business params in the form body",
        "POST",
        {"Action": "RefreshObjectCaches", "Version": "2018-05-10"},
        {
            "ObjectPath": "https://cdn.example.com/a b.png\nhttps://cdn.example.com/caf%C3%A9/*~x",
            "ObjectType": "File",
        },
        "JSON",
        CDN_AK,
        CDN_SECRET,
        TIMESTAMP,
    )
    case(
        "DescribeRefreshTaskById, all params in the query",
        "GET",
        {"Action": "DescribeRefreshTaskById", "Version": "2018-05-10", "TaskId": "1,2,3"},
        {},
        "JSON",
        CDN_AK,
        CDN_SECRET,
        TIMESTAMP,
    )
    return out


class Captured(BaseException):
    def __init__(self, request):
        super().__init__("captured")
        self.request = request


def v3_vectors():
    from alibabacloud_tea_openapi import client as tea_client
    from alibabacloud_tea_openapi import utils_models
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_tea_openapi.utils import Utils
    from darabonba.runtime import RuntimeOptions

    Utils.get_nonce = staticmethod(lambda: NONCE.replace("-", ""))
    Utils.get_timestamp = staticmethod(lambda: TIMESTAMP)
    Utils.get_user_agent = staticmethod(lambda _ua=None: USER_AGENT)

    def capture(request, runtime):
        raise Captured(request)

    tea_client.DaraCore.do_action = staticmethod(capture)
    client = tea_client.Client(
        Config(access_key_id=CDN_AK, access_key_secret=CDN_SECRET, endpoint="cdn.aliyuncs.com")
    )
    out = []

    def case(name, action, query=None, body=None):
        params = utils_models.Params(
            action=action,
            version="2018-05-10",
            protocol="HTTPS",
            pathname="/",
            method="POST",
            auth_type="AK",
            style="RPC",
            req_body_type="formData",
            body_type="json",
        )
        req = utils_models.OpenApiRequest(query=query, body=body)
        try:
            client.do_request(params, req, RuntimeOptions())
        except Captured as c:
            r = c.request
            headers = {k: str(v) for k, v in r.headers.items()}
            out.append(
                {
                    "name": name,
                    "access_key_id": CDN_AK,
                    "secret": CDN_SECRET,
                    "method": r.method,
                    "path": r.pathname,
                    "query": {k: str(v) for k, v in (r.query or {}).items()},
                    "headers": headers,
                    "body": r.body if isinstance(r.body, str) else (r.body or b"").decode(),
                    "authorization": headers.get("Authorization", ""),
                }
            )
            return
        raise SystemExit(f"{name}: the SDK did not try to send")

    case(
        "RefreshObjectCaches, form body",
        "RefreshObjectCaches",
        body={
            "ObjectPath": "https://cdn.example.com/a b.png\nhttps://cdn.example.com/caf%C3%A9/*~x",
            "ObjectType": "File",
        },
    )
    case("DescribeRefreshTaskById, query", "DescribeRefreshTaskById", query={"TaskId": "1,2,3"})
    case("DescribeRefreshQuota, no params", "DescribeRefreshQuota")
    return out


def main():
    doc = {
        "generated_by": "scripts/gen_aliyun_vectors.py",
        "sdk_versions": {
            "aliyun-python-sdk-core": version("aliyun-python-sdk-core"),
            "alibabacloud-tea-openapi": version("alibabacloud-tea-openapi"),
        },
        "v1": v1_vectors(),
        "v3": v3_vectors(),
    }
    published = doc["v1"][0]
    if published["signature"] != "OLeaidS1JvxuMvnyHOwuJ+uX5qY=":
        print(
            "note: the SDK's DescribeRegions signature differs from the published one "
            f"(it signs SignatureType too): {published['signature']}",
            file=sys.stderr,
        )
    json.dump(doc, sys.stdout, indent=2, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
