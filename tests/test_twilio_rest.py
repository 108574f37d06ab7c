"""Twilio's REST API client (outbound calls, transfers) against the local fake of api.twilio.com, the
TwiML it sends, and its configuration."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from ringline.benchmarks.vendors.twilio_rest import FakeTwilioRest
from ringline.config.settings import TelephonyConfig, load_settings
from ringline.engine.errors import ConfigError, ProviderError
from ringline.engine.transports.base import TransferFailed
from ringline.engine.transports.twilio.rest import (
    MAX_TWIML,
    TwilioCall,
    TwilioRest,
    TwilioRestError,
    dial_twiml,
    error_from_response,
    stream_twiml,
)

pytestmark = pytest.mark.timeout(30)

TOKEN = "twilio-test-token-5f1c"
TO, FROM = "+14155550199", "+14155550100"
STREAM = "wss://voice.example.com/media/twilio"


@pytest.fixture
async def twilio():
    async with FakeTwilioRest(auth_token=TOKEN) as server:
        yield server


@pytest.fixture
async def rest(twilio: FakeTwilioRest):
    async with TwilioRest(twilio.account_sid, TOKEN, base_url=twilio.url, timeout_s=2.0) as client:
        yield client


def parameters(twiml: str) -> tuple[str, dict[str, str]]:
    """The stream URL and custom parameters of ``<Connect><Stream>`` TwiML."""
    root = ET.fromstring(twiml)
    assert root.tag == "Response" and [c.tag for c in root] == ["Connect"]
    stream = root.find("Connect/Stream")
    assert stream is not None
    return stream.attrib["url"], {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}


# -- TwiML ---------------------------------------------------------------------------------------


def test_stream_twiml_carries_every_parameter_escaped() -> None:
    tricky = {"agent": "sales", "var_note": 'Say "hi" & <smile>\n', "var_quote": "it's"}
    twiml = stream_twiml(STREAM + "?a=1&b=2", tricky)
    assert twiml.startswith("<Response><Connect><Stream url=")
    assert "&amp;" in twiml and "<smile>" not in twiml
    assert parameters(twiml) == (STREAM + "?a=1&b=2", tricky)


def test_dial_twiml_for_a_number_and_for_a_sip_uri() -> None:
    assert dial_twiml("+14155550111") == "<Response><Dial>+14155550111</Dial></Response>"
    sip = dial_twiml("sip:desk@pbx.example.com;transport=tls&x=1")
    assert sip == "<Response><Dial><Sip>sip:desk@pbx.example.com;transport=tls&amp;x=1</Sip></Dial></Response>"
    assert ET.fromstring(sip).findtext("Dial/Sip") == "sip:desk@pbx.example.com;transport=tls&x=1"


# -- placing calls ---------------------------------------------------------------------------------


async def test_create_call_posts_the_form_with_basic_auth_and_returns_twilios_call(
    twilio: FakeTwilioRest, rest: TwilioRest
) -> None:
    twiml = stream_twiml(STREAM, {"agent": "sales", "direction": "outbound"})
    call = await rest.create_call(to=TO, from_=FROM, twiml=twiml, status_callback="https://voice.example.com/status")
    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert (call.status, call.to, call.from_, call.direction) == ("queued", TO, FROM, "outbound-api")
    request = twilio.requests[0]
    assert request.authorized and request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Calls.json"
    assert (request.form["To"], request.form["From"], request.form["Twiml"]) == (TO, FROM, twiml)
    assert request.form["StatusCallback"] == "https://voice.example.com/status"
    events = [v for k, v in request.pairs if k == "StatusCallbackEvent"]
    assert events == ["initiated", "ringing", "answered", "completed"]
    assert twilio.calls[call.sid].twiml == [twiml]


async def test_a_wrong_token_is_twilios_401_and_not_retryable(twilio: FakeTwilioRest) -> None:
    async with TwilioRest(twilio.account_sid, "wrong", base_url=twilio.url) as rest:
        with pytest.raises(TwilioRestError) as caught:
            await rest.create_call(to=TO, from_=FROM, twiml="<Response/>")
    error = caught.value
    assert (error.status, error.code, error.retryable, error.field) == (401, 20003, False, None)
    assert str(error) == (
        "Twilio refused the request (HTTP 401, error 20003): Authenticate: Your AccountSid or AuthToken was incorrect."
    )
    assert error.more_info == "https://www.twilio.com/docs/errors/20003"
    assert not twilio.requests[0].authorized and twilio.calls == {}


async def test_an_invalid_number_is_reported_by_field(rest: TwilioRest) -> None:
    with pytest.raises(TwilioRestError) as caught:
        await rest.create_call(to="4155550199", from_=FROM, twiml="<Response/>")
    error = caught.value
    assert (error.status, error.code, error.field) == (400, 21211, "to")
    assert error.twilio_message == "Invalid 'To' Phone Number: 4155550199"
    with pytest.raises(TwilioRestError) as caught:
        await rest.create_call(to=TO, from_="not-a-number", twiml="<Response/>")
    assert (caught.value.code, caught.value.field) == (21212, "from")


async def test_faults_come_back_as_twilio_errors_retryable_when_they_may_pass(
    twilio: FakeTwilioRest, rest: TwilioRest
) -> None:
    twilio.fault(400, 21210)
    twilio.fault(429)
    twilio.fault(500)
    outcomes = []
    for _ in range(3):
        with pytest.raises(TwilioRestError) as caught:
            await rest.create_call(to=TO, from_=FROM, twiml="<Response/>")
        outcomes.append((caught.value.status, caught.value.code, caught.value.retryable, caught.value.field))
    assert outcomes == [(400, 21210, False, "from"), (429, 20429, True, None), (500, 20500, True, None)]
    assert isinstance(caught.value, ProviderError)
    assert (await rest.create_call(to=TO, from_=FROM, twiml="<Response/>")).status == "queued"  # faults used up


async def test_no_answer_within_the_timeout(twilio: FakeTwilioRest) -> None:
    twilio.fault(hang=True)
    async with TwilioRest(twilio.account_sid, TOKEN, base_url=twilio.url, timeout_s=0.2) as rest:
        with pytest.raises(TwilioRestError) as caught:
            await rest.create_call(to=TO, from_=FROM, twiml="<Response/>")
    assert str(caught.value) == "Twilio did not answer within 0.2 s"
    assert caught.value.retryable and caught.value.status is None


async def test_nothing_listening_is_a_retryable_error(twilio: FakeTwilioRest) -> None:
    url = twilio.url
    await twilio.close()
    async with TwilioRest(twilio.account_sid, TOKEN, base_url=url) as rest:
        with pytest.raises(TwilioRestError) as caught:
            await rest.create_call(to=TO, from_=FROM, twiml="<Response/>")
    assert str(caught.value).startswith("cannot reach Twilio: ") and caught.value.retryable


async def test_twiml_over_twilios_limit_is_refused_before_sending(twilio: FakeTwilioRest, rest: TwilioRest) -> None:
    twiml = stream_twiml(STREAM, {"var_long": "x" * MAX_TWIML})
    with pytest.raises(ValueError, match=f"Twilio takes at most {MAX_TWIML}"):
        await rest.create_call(to=TO, from_=FROM, twiml=twiml)
    assert twilio.requests == []


def test_answers_that_are_not_twilios_shape() -> None:
    error = error_from_response(502, b"<html>Bad Gateway</html>")
    assert (str(error), error.retryable, error.code) == ("Twilio answered HTTP 502 without an error body", True, None)
    with pytest.raises(TwilioRestError, match="^Twilio's answer has no call sid$"):
        TwilioCall.parse({"status": "queued"})
    with pytest.raises(TwilioRestError, match="^Twilio's answer is not a JSON object$"):
        TwilioCall.parse(["CA1"])


async def test_the_client_never_shows_its_token(twilio: FakeTwilioRest) -> None:
    rest = TwilioRest(twilio.account_sid, TOKEN, base_url=twilio.url)
    assert TOKEN not in repr(rest) and twilio.account_sid in repr(rest)
    with pytest.raises(RuntimeError, match="not started"):
        await rest.create_call(to=TO, from_=FROM, twiml="<Response/>")


# -- live calls: transfer --------------------------------------------------------------------------


async def test_transfer_redirects_the_live_call_to_a_dial(twilio: FakeTwilioRest, rest: TwilioRest) -> None:
    sid = "CA" + "1" * 32
    twilio.add_call(sid, to=FROM, from_=TO)
    await rest.transferrer(sid)("sip:desk@pbx.example.com")
    request = twilio.requests[0]
    assert request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Calls/{sid}.json"
    assert request.form == {"Twiml": "<Response><Dial><Sip>sip:desk@pbx.example.com</Sip></Dial></Response>"}
    assert twilio.calls[sid].twiml == [request.form["Twiml"]]


async def test_a_refused_transfer_is_transfer_failed_with_twilios_reason(
    twilio: FakeTwilioRest, rest: TwilioRest
) -> None:
    unknown = "CA" + "2" * 32
    with pytest.raises(TransferFailed) as caught:
        await rest.transferrer(unknown)("+14155550111")
    assert str(caught.value) == (
        "Twilio refused the request (HTTP 404, error 20404): The requested resource "
        f"/2010-04-01/Accounts/{twilio.account_sid}/Calls/{unknown}.json was not found"
    )
    over = "CA" + "3" * 32
    twilio.add_call(over, status="completed")
    with pytest.raises(TransferFailed, match="error 21220.*Call is not in-progress"):
        await rest.transferrer(over)("+14155550111")


async def test_a_queued_call_can_be_cancelled_through_the_fake(twilio: FakeTwilioRest, rest: TwilioRest) -> None:
    call = await rest.create_call(to=TO, from_=FROM, twiml="<Response/>")
    await rest._post(f"{rest._calls_url}/{call.sid}.json", [("Status", "canceled")])
    assert twilio.calls[call.sid].status == "canceled"
    with pytest.raises(TwilioRestError, match="21220"):
        await rest.update_call(call.sid, twiml=dial_twiml("+14155550111"))


# -- configuration ---------------------------------------------------------------------------------


def test_twilio_credentials_come_from_the_file_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    sid = "AC" + "a" * 32
    assert load_settings().telephony == TelephonyConfig()
    assert load_settings().telephony.twilio is None and load_settings().telephony.public_url is None
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    telephony = load_settings(data={"telephony": {"public_url": "https://voice.example.com/", "twilio": {}}}).telephony
    assert telephony.public_url == "https://voice.example.com"
    assert telephony.twilio is not None
    assert (telephony.twilio.account_sid, telephony.twilio.auth_token.get_secret_value()) == (sid, TOKEN)
    assert (telephony.twilio.api_base_url, telephony.twilio.timeout_s) == ("https://api.twilio.com", 10.0)
    assert TOKEN not in repr(telephony)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    with pytest.raises(
        ConfigError, match="telephony.twilio: .*auth_token is missing: set it here or in the environment as"
    ):
        load_settings(data={"telephony": {"twilio": {}}})
    with pytest.raises(ConfigError, match="telephony.twilio.account_sid: String should match pattern"):
        load_settings(data={"telephony": {"twilio": {"account_sid": "SK123", "auth_token": "x"}}})
    with pytest.raises(ConfigError, match="telephony.public_url: String should match pattern"):
        load_settings(data={"telephony": {"public_url": "voice.example.com"}})
