"""Digest authentication: the worked examples of RFC 2617 (3.5) and RFC 7616 (3.9.1), the client
answering 401/407 challenges, and the server verifier (stale nonces, replays, forgeries)."""

from __future__ import annotations

import pytest

from ringline.engine.transports.sip.digest import (
    AuthResult,
    Challenge,
    Credentials,
    DigestError,
    DigestVerifier,
    authorize,
    digest_response,
    make_credentials,
    parse_auth_params,
)
from ringline.engine.transports.sip.message import Request, make_response, parse
from tests.sip_messages import INVITE

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)
RFC7616 = dict(
    username="Mufasa",
    realm="http-auth@example.org",
    password="Circle of Life",
    method="GET",
    uri="/dir/index.html",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    qop="auth",
    nc="00000001",
    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
)


def test_rfc2617_example():
    challenge = Challenge.parse(RFC2617_CHALLENGE)
    assert challenge.qop == ("auth", "auth-int") and challenge.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    creds = make_credentials(
        challenge, method="GET", uri="/dir/index.html", username="Mufasa", password="Circle Of Life", cnonce="0a4f113b"
    )
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert (creds.qop, creds.nc, creds.cnonce) == ("auth", "00000001", "0a4f113b")
    assert Credentials.parse(str(creds)) == creds


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str):
    assert digest_response(algorithm=algorithm, **RFC7616) == expected
    header = (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616["nonce"]}", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    challenge = Challenge.parse(header)
    creds = make_credentials(
        challenge, method="GET", uri="/dir/index.html", username="Mufasa", password="Circle of Life",
        cnonce=RFC7616["cnonce"],
    )  # fmt: skip
    assert creds.response == expected and creds.algorithm == algorithm


def test_other_digest_variants():
    no_qop = digest_response(algorithm="MD5", **{**RFC7616, "qop": None, "nc": None, "cnonce": None})
    assert no_qop == digest_response(algorithm="md5", **{**RFC7616, "qop": None})  # nc/cnonce unused without qop
    sess = digest_response(algorithm="MD5-sess", **RFC7616)
    assert sess != digest_response(algorithm="MD5", **RFC7616) and len(sess) == 32
    auth_int = digest_response(algorithm="SHA-256", **{**RFC7616, "qop": "auth-int"}, body=b"v=0\r\n")
    assert auth_int != digest_response(algorithm="SHA-256", **{**RFC7616, "qop": "auth-int"})
    with pytest.raises(DigestError, match="^unsupported digest algorithm 'SHA-512-256'$"):
        digest_response(algorithm="SHA-512-256", **RFC7616)


def test_challenge_round_trip_and_errors():
    challenge = Challenge("sip.example.com", "n0nce", "SHA-256", ("auth",), "op", stale=True)
    text = str(challenge)
    assert (
        text == 'Digest realm="sip.example.com", nonce="n0nce", algorithm=SHA-256, qop="auth", opaque="op", stale=TRUE'
    )
    assert Challenge.parse(text) == challenge
    assert parse_auth_params('Digest realm="a \\"b\\"", stale=false') == (
        "Digest",
        {"realm": 'a "b"', "stale": "false"},
    )
    for bad, message in [
        ('Basic realm="x"', "unsupported auth scheme 'Basic'"),
        ('Digest nonce="x"', "challenge without realm or nonce"),
        ('Digest realm="x", nonce', "malformed auth parameters 'Digest realm=\"x\", nonce'"),
    ]:
        with pytest.raises(DigestError) as info:
            Challenge.parse(bad)
        assert str(info.value) == message
    with pytest.raises(DigestError, match="^credentials without uri$"):
        Credentials.parse('Digest username="a", realm="b", nonce="c", response="d"')


def invite() -> Request:
    msg = parse(INVITE)
    assert isinstance(msg, Request)
    return msg


def test_authorize_answers_401_with_the_strongest_challenge():
    verifier = DigestVerifier("biloxi.example.com", algorithm="SHA-256")
    req = invite()
    md5 = Challenge("biloxi.example.com", "other", "MD5", ("auth",))
    challenge = make_response(
        req, 401, to_tag="x",
        headers=[("WWW-Authenticate", 'Newauth realm="apps"'), ("WWW-Authenticate", str(md5)),
                 ("WWW-Authenticate", str(verifier.challenge(10.0)))],
    )  # fmt: skip
    again = authorize(req, challenge, "bob", "zanzibar")
    assert str(again.cseq) == "2 INVITE" and again.branch != req.branch and again.branch.startswith("z9hG4bK")  # type: ignore[union-attr]
    assert again.body == req.body and again.call_id == req.call_id and again.from_tag == req.from_tag
    header = again.headers.get("Authorization")
    assert header is not None and "algorithm=SHA-256" in header and "Proxy-Authorization" not in again.headers
    passwords = {"bob": "zanzibar"}.get
    assert verifier.verify(header, method="INVITE", now=11.0, password_for=passwords, uri=req.uri) is AuthResult.OK
    # a second challenge replaces the credentials instead of piling them up
    twice = authorize(again, challenge, "bob", "zanzibar")
    assert len(twice.headers.get_all("Authorization")) == 1 and str(twice.cseq) == "3 INVITE"


def test_authorize_answers_407_and_refuses_unusable_challenges():
    req = invite()
    proxy = make_response(req, 407, headers=[("Proxy-Authenticate", str(Challenge("atlanta", "n", "MD5")))])
    again = authorize(req, proxy, "alice", "pw")
    creds = Credentials.parse(again.headers.get("Proxy-Authorization") or "")
    assert (creds.realm, creds.qop, creds.uri) == ("atlanta", None, req.uri)
    assert creds.response == digest_response(
        algorithm="MD5", username="alice", realm="atlanta", password="pw", method="INVITE", uri=req.uri, nonce="n"
    )
    unusable = make_response(req, 401, headers=[("WWW-Authenticate", 'Digest realm="r", nonce="n", algorithm=FOO')])
    with pytest.raises(DigestError, match="^no usable WWW-Authenticate challenge$"):
        authorize(req, unusable, "a", "b")


def creds_for(challenge: Challenge, *, password: str = "zanzibar", nc: int = 1, uri: str = "sip:bob@b") -> str:
    return str(make_credentials(challenge, method="INVITE", uri=uri, username="bob", password=password, nc=nc))


def test_verifier():
    verifier = DigestVerifier("biloxi.example.com", secret=b"k" * 32, lifetime=300.0)
    users = {"bob": "zanzibar"}.get
    challenge = verifier.challenge(100.0)
    assert challenge.qop == ("auth",) and challenge.algorithm == "MD5" and not challenge.stale

    def check(header: str, now: float = 150.0, method: str = "INVITE", uri: str | None = "sip:bob@b") -> AuthResult:
        return verifier.verify(header, method=method, now=now, password_for=users, uri=uri)

    assert check(creds_for(challenge)) is AuthResult.OK
    assert check(creds_for(challenge)) is AuthResult.INVALID  # nc 1 again: a replay
    assert check(creds_for(challenge, nc=2)) is AuthResult.OK
    assert check(creds_for(challenge, nc=5)) is AuthResult.OK  # counts may skip, never go back
    assert check(creds_for(challenge, nc=4)) is AuthResult.INVALID
    assert check(creds_for(challenge, password="wrong", nc=9)) is AuthResult.INVALID
    assert check(creds_for(challenge, nc=10), method="BYE") is AuthResult.INVALID
    assert check(creds_for(challenge, nc=11), uri="sip:other@b") is AuthResult.INVALID
    assert check(creds_for(verifier.challenge(0.0)), now=301.0) is AuthResult.STALE
    assert check(creds_for(verifier.challenge(0.0), password="wrong"), now=301.0) is AuthResult.INVALID
    forged = Challenge("biloxi.example.com", challenge.nonce[:-2] + "AA")
    assert check(creds_for(forged)) is AuthResult.INVALID
    foreign = DigestVerifier("biloxi.example.com", secret=b"x" * 32).challenge(100.0)
    assert check(creds_for(foreign)) is AuthResult.INVALID
    other_realm = Challenge("elsewhere", challenge.nonce, qop=("auth",))
    assert check(creds_for(other_realm)) is AuthResult.INVALID
    no_qop = Challenge("biloxi.example.com", verifier.challenge(120.0).nonce)
    assert check(creds_for(no_qop)) is AuthResult.OK and check(creds_for(no_qop)) is AuthResult.OK
    assert check("Digest garbage") is AuthResult.INVALID
    assert check('Digest username="eve", realm="biloxi.example.com", nonce="x", uri="u", response="r"') is (
        AuthResult.INVALID
    )
    stale = verifier.challenge(500.0, stale=True)
    assert stale.stale and "stale=TRUE" in str(stale)
