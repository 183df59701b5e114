"""The checks of tests/python/smoke_grpc.py, by RPC group: (a)-(d) SignUrls, health,
reflection and SignCookies (run_all), (f)-(g) SignPlaylist and VerifyUrls (run_playlists),
(e) the grant escapes (run_escapes); and the CloudFront signature helpers they verify with
(the dev key's public half, PKCS1v15/SHA-1 over the policy).
"""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import parse_qsl, urlsplit

from smoke_harness import REPO_ROOT, CheckFailed, expect, run_check

HOST = "https://d111111abcdef8.cloudfront.net"
BATCH = 1000
BAD_INDEX = 500
TTL = 3600


# ------------------------------------------------------------------ CloudFront signatures

def cf_b64_decode(text: str) -> bytes:
    """CloudFront's URL-safe base64 ('-' for '+', '_' for '=', '~' for '/')."""
    return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"), validate=True)


def canned_policy(url: str, expires: int) -> bytes:
    return (
        '{"Statement":[{"Resource":"' + url + '","Condition":{"DateLessThan":{"AWS:EpochTime":'
        + str(expires) + "}}}]}"
    ).encode("utf-8")


def verify_sig(pubkey, signature: bytes, message: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        pubkey.verify(signature, message, padding.PKCS1v15(), hashes.SHA1())
    except InvalidSignature:
        raise CheckFailed(f"RSA-SHA1 signature does not verify over {message[:120]!r}") from None


def signed_params(signed_url: str, url: str) -> dict[str, str]:
    expect(signed_url.startswith(url + "?"), f"signed URL does not extend {url!r} with '?': {signed_url[:200]!r}")
    pairs = parse_qsl(urlsplit(signed_url).query, keep_blank_values=True)
    return dict(pairs)


# ------------------------------------------------------------------ checks

def run_all(report, channel, pb, pb_grpc, health_pb2, health_pb2_grpc, ReflectionDB, pubkey, args) -> None:
    stub = pb_grpc.SignerStub(channel)
    key_id = args.key_id

    # (a) SignUrls, 1000 items, one bad.
    urls = [f"{HOST}/hls/seg{i}.ts" for i in range(BATCH)]
    urls[BAD_INDEX] = "not a url"
    req = pb.SignUrlsRequest(
        items=[pb.SignItem(url=u) for u in urls],
        key_id=key_id,
        ttl_seconds=TTL,
    )
    state: dict[str, object] = {}

    def call_sign_urls():
        t0 = int(time.time())
        resp = stub.SignUrls(req, timeout=args.timeout)
        t1 = int(time.time())
        state.update(resp=resp, t0=t0, t1=t1)
        return f"{len(resp.results)} results, signed={resp.signed} failed={resp.failed}"

    run_check(report, "a0 SignUrls call", call_sign_urls)
    resp = state.get("resp")

    def results_in_order():
        expect(resp is not None, "no SignUrls response")
        expect(len(resp.results) == BATCH, f"expected {BATCH} results, got {len(resp.results)}")
        wrong = [(i, r.index) for i, r in enumerate(resp.results) if r.index != i]
        expect(not wrong, f"results out of order; first (position, index) mismatches: {wrong[:5]}")
        expect((resp.signed, resp.failed) == (BATCH - 1, 1),
               f"response counts signed={resp.signed} failed={resp.failed}, expected {BATCH - 1}/1")
        return f"{BATCH} results, index == position, signed={resp.signed} failed={resp.failed}"

    def one_error():
        expect(resp is not None, "no SignUrls response")
        errs = [i for i, r in enumerate(resp.results) if r.WhichOneof("outcome") == "error"]
        expect(errs == [BAD_INDEX], f"expected exactly one error at index {BAD_INDEX}, got errors at {errs[:10]}")
        err = resp.results[BAD_INDEX].error
        code = pb.ItemError.Code.Name(err.code)
        expect(code == "INVALID_ARGUMENT", f"item {BAD_INDEX} error code {code}, expected INVALID_ARGUMENT")
        expect("url" in err.field, f"item {BAD_INDEX} error field {err.field!r} does not name the url")
        r = resp.results[BAD_INDEX]
        expect(r.expires_at == 0 and r.key_id == "",
               f"error result should have expires_at=0 and empty key_id, got {r.expires_at}, {r.key_id!r}")
        return f"item {BAD_INDEX}: {code} field={err.field!r} message={err.message!r}"

    def signed_urls_shape():
        expect(resp is not None, "no SignUrls response")
        t0, t1 = state["t0"], state["t1"]
        problems = []
        for i, r in enumerate(resp.results):
            if i == BAD_INDEX:
                continue
            if r.WhichOneof("outcome") != "signed_url":
                problems.append(f"{i}: outcome {r.WhichOneof('outcome')}")
                continue
            s = r.signed_url
            for part in ("Expires=", "Signature=", f"Key-Pair-Id={key_id}"):
                if part not in s:
                    problems.append(f"{i}: no {part!r}")
            if not (t0 + TTL - 2 <= r.expires_at <= t1 + TTL + 2):
                problems.append(f"{i}: expires_at {r.expires_at} not now+{TTL}")
            if f"Expires={r.expires_at}&" not in s:
                problems.append(f"{i}: Expires in URL differs from expires_at {r.expires_at}")
            if r.key_id != key_id:
                problems.append(f"{i}: key_id {r.key_id!r}")
            if len(problems) > 5:
                break
        expect(not problems, "; ".join(problems[:5]))
        return f"{BATCH - 1} signed URLs with Expires=, Signature=, Key-Pair-Id={key_id}, expires_at = now+{TTL}"

    def verify_three():
        expect(resp is not None, "no SignUrls response")
        picked = [0, BAD_INDEX + 1, BATCH - 1]
        for i in picked:
            r = resp.results[i]
            expect(r.WhichOneof("outcome") == "signed_url", f"item {i} is not a signed URL")
            params = signed_params(r.signed_url, urls[i])
            expect(list(params) == ["Expires", "Signature", "Key-Pair-Id"],
                   f"item {i}: query parameters {list(params)}, expected Expires, Signature, Key-Pair-Id")
            exp = int(params["Expires"])
            verify_sig(pubkey, cf_b64_decode(params["Signature"]), canned_policy(urls[i], exp))
        return f"items {picked} verify (PKCS1v15/SHA-1, canned policy) against {args.pubkey.name}"

    run_check(report, "a1 SignUrls results in order", results_in_order)
    run_check(report, "a2 SignUrls one per-item error", one_error)
    run_check(report, "a3 SignUrls 999 signed URLs", signed_urls_shape)
    run_check(report, "a4 SignUrls signatures verify", verify_three)

    # (b) health.
    def health():
        h = health_pb2_grpc.HealthStub(channel)
        r = h.Check(health_pb2.HealthCheckRequest(service=""), timeout=args.timeout)
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)
        expect(r.status == health_pb2.HealthCheckResponse.SERVING, f"status {name}, expected SERVING")
        return f'service "" is {name}'

    run_check(report, "b  grpc.health.v1.Health/Check", health)

    # (c) reflection, v1alpha.
    def reflection():
        db = ReflectionDB(channel)
        services = sorted(db.get_services())
        expect("cdnsign.v1.Signer" in services, f"cdnsign.v1.Signer not listed; services: {services}")
        return "services: " + ", ".join(services)

    run_check(report, "c  reflection (v1alpha) lists cdnsign.v1.Signer", reflection)

    # (d) SignCookies with a custom policy.
    def cookies():
        resource = f"{HOST}/hls/*"
        url = f"{HOST}/hls/seg1.ts"
        creq = pb.SignCookiesRequest(
            items=[pb.SignItem(url=url, policy_resource=resource)],
            key_id=key_id,
            ttl_seconds=TTL,
        )
        t0 = int(time.time())
        cresp = stub.SignCookies(creq, timeout=args.timeout)
        t1 = int(time.time())
        expect(len(cresp.results) == 1, f"expected 1 result, got {len(cresp.results)}")
        r = cresp.results[0]
        outcome = r.WhichOneof("outcome")
        if outcome == "error":
            raise CheckFailed(f"item error {pb.ItemError.Code.Name(r.error.code)} "
                              f"field={r.error.field!r} message={r.error.message!r}")
        expect(outcome == "cookies", f"outcome {outcome!r}")
        jar = {c.name: c.value for c in r.cookies.cookies}
        want = {"CloudFront-Policy", "CloudFront-Signature", "CloudFront-Key-Pair-Id"}
        expect(set(jar) == want, f"cookie names {sorted(jar)}, expected {sorted(want)}")
        expect(jar["CloudFront-Key-Pair-Id"] == key_id, f"CloudFront-Key-Pair-Id {jar['CloudFront-Key-Pair-Id']!r}")
        expect(len(r.cookies.set_cookie_headers) == 3,
               f"{len(r.cookies.set_cookie_headers)} Set-Cookie headers, expected 3")
        policy = cf_b64_decode(jar["CloudFront-Policy"])
        stmt = json.loads(policy)["Statement"][0]
        expect(stmt["Resource"] == resource, f"policy Resource {stmt['Resource']!r}, expected {resource!r}")
        exp = stmt["Condition"]["DateLessThan"]["AWS:EpochTime"]
        expect(exp == r.expires_at and t0 + TTL - 2 <= exp <= t1 + TTL + 2,
               f"policy DateLessThan {exp}, result expires_at {r.expires_at}, expected about now+{TTL}")
        verify_sig(pubkey, cf_b64_decode(jar["CloudFront-Signature"]), policy)
        return "CloudFront-Policy, CloudFront-Signature, CloudFront-Key-Pair-Id; policy " + policy.decode()

    run_check(report, "d  SignCookies custom policy", cookies)
    run_playlists(report, stub, pb, pubkey, args)


def run_playlists(report, stub, pb, pubkey, args) -> None:
    """(f) SignPlaylist and (g) VerifyUrls, by enum and field names from the proto."""
    import grpc

    fixtures = REPO_ROOT / "tests/fixtures/playlists/ffmpeg"
    text = (fixtures / "fmp4.m3u8").read_text()
    base = f"{HOST}/vod/fmp4/stream.m3u8"
    state: dict[str, object] = {}

    def per_uri():
        resp = stub.SignPlaylist(pb.SignPlaylistRequest(
            playlist=text, base_url=base, mode=pb.PlaylistMode.Value("PER_URI"),
            key_id=args.key_id, ttl_seconds=TTL), timeout=args.timeout)
        expect(len(resp.errors) == 0, f"errors {list(resp.errors)}")
        expect(resp.format == pb.SignPlaylistResponse.Format.Value("HLS_MEDIA"), f"format {resp.format}")
        expect(resp.signatures == 4 and resp.rewritten == 4, f"signatures {resp.signatures} rewritten {resp.rewritten}")
        old, new = text.splitlines(), resp.playlist.splitlines()
        expect(len(old) == len(new), "line count changed")
        signed = []
        for a, b in zip(old, new):
            if a == b:
                continue
            url = b.split('URI="', 1)[1].split('"', 1)[0] if b.startswith("#") else b
            unsigned = urlsplit(url)._replace(query="").geturl()
            expect(unsigned.endswith("/" + (a.split('URI="', 1)[1].split('"', 1)[0] if a.startswith("#") else a)),
                   f"{a!r} became {b[:120]!r}")
            params = signed_params(url, unsigned)
            verify_sig(pubkey, cf_b64_decode(params["Signature"]), canned_policy(unsigned, int(params["Expires"])))
            signed.append(url)
        expect(len(signed) == 4, f"{len(signed)} lines changed")
        state["url"] = signed[1]
        return "4 URIs signed (EXT-X-MAP and 3 segments), each verified; every other line unchanged"

    def shared():
        resp = stub.SignPlaylist(pb.SignPlaylistRequest(
            playlist=text, base_url=base, mode=pb.PlaylistMode.Value("SHARED_POLICY"),
            key_id=args.key_id, ttl_seconds=TTL), timeout=args.timeout)
        expect(resp.signatures == 1, f"signatures {resp.signatures}")
        expect(resp.policy_resource == f"{HOST}/vod/fmp4/*", f"resource {resp.policy_resource!r}")
        return f"{resp.rewritten} URIs under one signature"

    def dash_per_uri_refused():
        mpd = (fixtures / "dash-template.mpd").read_text()
        try:
            stub.SignPlaylist(pb.SignPlaylistRequest(
                playlist=mpd, base_url=f"{HOST}/dash/manifest.mpd", mode=pb.PlaylistMode.Value("PER_URI"),
                key_id=args.key_id, ttl_seconds=TTL), timeout=args.timeout)
        except grpc.RpcError as e:
            expect(e.code() == grpc.StatusCode.INVALID_ARGUMENT, f"code {e.code()}")
            expect("SHARED_POLICY" in e.details() and "COOKIES" in e.details(), e.details())
            return e.details()[:100]
        raise CheckFailed("PER_URI on a $Number$ template was accepted")

    def verify_urls():
        url = state.get("url")
        expect(isinstance(url, str), "no signed URL from f1")
        tampered = url.replace("Expires=", "Expires=1")
        resp = stub.VerifyUrls(pb.VerifyUrlsRequest(urls=[url, tampered]), timeout=args.timeout)
        expect(resp.results[0].valid, f"{list(resp.results[0].problems)}")
        reasons = [pb.VerifyProblem.Reason.Name(p.reason) for p in resp.results[1].problems]
        expect(not resp.results[1].valid and "SIGNATURE" in reasons, f"tampered: {reasons}")
        return f"valid; tampered: {reasons}"

    run_check(report, "f1 SignPlaylist PER_URI (ffmpeg fMP4)", per_uri)
    run_check(report, "f2 SignPlaylist SHARED_POLICY", shared)
    run_check(report, "f3 SignPlaylist PER_URI on a $Number$ MPD refused", dash_per_uri_refused)
    run_check(report, "g  VerifyUrls", verify_urls)


def run_escapes(report, channel, pb, pb_grpc, args) -> None:
    """(e): attempts to sign outside a grant, from the shared fixture."""
    stub = pb_grpc.SignerStub(channel)
    fixture = json.loads(args.escapes.read_text())
    prefix = fixture["prefix"]
    granted = args.token is not None
    cases = [e for e in fixture["escapes"] if granted or e["code"] == "INVALID_ARGUMENT"]
    items = []
    for i, e in enumerate(cases):
        # custom_policy / ip_range make a url with no policy_resource the custom Resource.
        extra = {"custom_policy": e.get("custom_policy", False), "ip_range": e.get("ip_range", "")}
        if e["field"] == "url":
            items.append(pb.SignItem(url=e["text"], **extra))
        else:
            items.append(pb.SignItem(url=f"{prefix}ok/{i}.ts", policy_resource=e["text"], **extra))
    items.append(pb.SignItem(url=f"{prefix}a/in-prefix.ts"))
    items.append(pb.SignItem(url=f"{prefix}a/seg.ts", policy_resource=f"{prefix}a/*"))

    def check(results, rpc):
        expect(len(results) == len(items), f"{rpc}: {len(results)} results for {len(items)} items")
        for i, (e, r) in enumerate(zip(cases, results)):
            expect(r.WhichOneof("outcome") == "error", f"{rpc}: {e['text']!r} was signed")
            got = pb.ItemError.Code.Name(r.error.code)
            expect(got == e["code"], f"{rpc}: {e['text']!r}: {got}, expected {e['code']}")
            want_field = f"items[{i}].{e['field']}"
            if e["code"] == "INVALID_ARGUMENT":
                expect(r.error.field == want_field, f"{rpc}: field {r.error.field!r}, expected {want_field!r}")
                expect("dot segment" in r.error.message, f"{rpc}: message {r.error.message!r}")
        for r in results[len(cases):]:
            expect(r.WhichOneof("outcome") != "error", f"{rpc}: in-prefix item refused: {r.error.message!r}")
        return f"{len(cases)} escapes refused as the fixture says, 2 in-prefix items signed"

    def sign_urls():
        resp = stub.SignUrls(pb.SignUrlsRequest(items=items, key_id=args.key_id, ttl_seconds=TTL),
                             timeout=args.timeout)
        return check(resp.results, "SignUrls")

    def sign_cookies():
        resp = stub.SignCookies(pb.SignCookiesRequest(items=items, key_id=args.key_id, ttl_seconds=TTL),
                                timeout=args.timeout)
        return check(resp.results, "SignCookies")

    def sign_urls_stream():
        batch = pb.SignUrlsRequest(items=items, key_id=args.key_id, ttl_seconds=TTL)
        out = list(stub.SignUrlsStream(iter([batch, batch]), timeout=args.timeout))
        expect(len(out) == 2, f"{len(out)} stream responses for 2 batches")
        return "; ".join(check(r.results, f"SignUrlsStream[{r.batch_index}]") for r in out)

    who = "granted client" if granted else "no grant"
    run_check(report, f"e1 escapes via SignUrls ({who})", sign_urls)
    run_check(report, f"e2 escapes via SignCookies ({who})", sign_cookies)
    run_check(report, f"e3 escapes via SignUrlsStream ({who})", sign_urls_stream)
