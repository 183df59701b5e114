"""Test helper: sets up and inspects CloudFront state in a running moto server.

Used by tests/it/purge_moto.rs (run with the venv python from scripts/setup.sh):

    moto_cloudfront.py setup --endpoint URL [--iam]
        Creates a distribution and prints {"distribution_id", "domain"} as JSON. With
        --iam (moto started with INITIAL_NO_AUTH_ACTION_COUNT=3) it first creates an IAM
        user allowed cloudfront:*, with an access key, and creates the distribution with
        that key; the key is printed too ("access_key_id", "secret_access_key").
    moto_cloudfront.py invalidations --endpoint URL --distribution ID [--key K --secret S]
        Prints every invalidation of the distribution with its status, caller reference
        and paths, as JSON.
    moto_cloudfront.py moto-state --endpoint URL
        The same list read from moto's own /moto-api/data.json, which needs no signature.
        (moto 5.2.5 with IAM checks on refuses SigV4 on CloudFront GETs even from botocore,
        so the IAM test reads state this way.)
"""

import argparse
import json
import sys

import boto3


def client(service, endpoint, key="testing", secret="testing"):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def setup(args):
    out = {}
    key, secret = "testing", "testing"
    if args.iam:
        # Exactly three unauthenticated calls (INITIAL_NO_AUTH_ACTION_COUNT=3).
        iam = client("iam", args.endpoint)
        iam.create_user(UserName="cdnsign-purger")
        iam.put_user_policy(
            UserName="cdnsign-purger",
            PolicyName="purge",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "cloudfront:*", "Resource": "*"}],
                }
            ),
        )
        ak = iam.create_access_key(UserName="cdnsign-purger")["AccessKey"]
        key, secret = ak["AccessKeyId"], ak["SecretAccessKey"]
        out["access_key_id"], out["secret_access_key"] = key, secret
    cf = client("cloudfront", args.endpoint, key, secret)
    dist = cf.create_distribution(
        DistributionConfig={
            "CallerReference": "cdnsign-test",
            "Comment": "cdnsign purge test",
            "Enabled": True,
            "Origins": {
                "Quantity": 1,
                "Items": [
                    {
                        "Id": "origin",
                        "DomainName": "origin.example.com",
                        "CustomOriginConfig": {
                            "HTTPPort": 80,
                            "HTTPSPort": 443,
                            "OriginProtocolPolicy": "https-only",
                        },
                    }
                ],
            },
            "DefaultCacheBehavior": {
                "TargetOriginId": "origin",
                "ViewerProtocolPolicy": "redirect-to-https",
                "MinTTL": 0,
                "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
                "TrustedSigners": {"Enabled": False, "Quantity": 0},
            },
        }
    )["Distribution"]
    out["distribution_id"] = dist["Id"]
    out["domain"] = dist["DomainName"]
    json.dump(out, sys.stdout)


def invalidations(args):
    cf = client("cloudfront", args.endpoint, args.key, args.secret)
    items = []
    marker = ""
    while True:
        kw = {"DistributionId": args.distribution, "MaxItems": "100"}
        if marker:
            kw["Marker"] = marker
        page = cf.list_invalidations(**kw)["InvalidationList"]
        for s in page.get("Items", []):
            inv = cf.get_invalidation(DistributionId=args.distribution, Id=s["Id"])["Invalidation"]
            batch = inv["InvalidationBatch"]
            items.append(
                {
                    "id": inv["Id"],
                    "status": inv["Status"],
                    "caller_reference": batch["CallerReference"],
                    "paths": batch["Paths"].get("Items", []),
                }
            )
        if not page.get("IsTruncated"):
            break
        marker = page.get("NextMarker", "")
        if not marker:
            break
    json.dump(items, sys.stdout)


def moto_state(args):
    import urllib.request

    with urllib.request.urlopen(args.endpoint + "/moto-api/data.json") as r:
        data = json.load(r)
    items = []
    for inv in data.get("cloudfront", {}).get("Invalidation", []):
        batch = inv["invalidation_batch"]
        items.append(
            {
                "id": inv["id"],
                "status": inv["status"],
                "caller_reference": batch["CallerReference"],
                "paths": batch["Paths"].get("Items", []),
            }
        )
    json.dump(items, sys.stdout)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--endpoint", required=True)
    s.add_argument("--iam", action="store_true")
    i = sub.add_parser("invalidations")
    i.add_argument("--endpoint", required=True)
    i.add_argument("--distribution", required=True)
    i.add_argument("--key", default="testing")
    i.add_argument("--secret", default="testing")
    m = sub.add_parser("moto-state")
    m.add_argument("--endpoint", required=True)
    args = p.parse_args()
    {"setup": setup, "invalidations": invalidations, "moto-state": moto_state}[args.cmd](args)


if __name__ == "__main__":
    main()
