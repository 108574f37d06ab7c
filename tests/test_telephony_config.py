"""``[telephony.telnyx]``, ``[telephony.plivo]`` and ``[telephony.vonage]``: credentials from the file
or the environment, defaults, and what is refused at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringline.config.settings import load_settings
from ringline.engine.errors import ConfigError

APPLICATION = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
PEM = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"


def telephony(**tables: object):
    return load_settings(data={"telephony": tables}).telephony


def test_nothing_is_configured_by_default() -> None:
    config = telephony()
    assert (config.telnyx, config.plivo, config.vonage) == (None, None, None)


def test_telnyx_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELNYX_API_KEY", "KEYsecret")
    monkeypatch.setenv("TELNYX_CONNECTION_ID", "1494404757140276705")
    telnyx = telephony(telnyx={}).telnyx
    assert telnyx is not None and telnyx.api_key.get_secret_value() == "KEYsecret"
    assert (telnyx.connection_id, telnyx.public_key) == ("1494404757140276705", None)
    assert (telnyx.api_base_url, telnyx.timeout_s) == ("https://api.telnyx.com/v2", 10.0)
    assert "KEYsecret" not in repr(telnyx)
    monkeypatch.delenv("TELNYX_API_KEY")
    with pytest.raises(
        ConfigError, match="telephony.telnyx: .*api_key is missing: set it here or in the environment as TELNYX_API_KEY"
    ):
        telephony(telnyx={})
    with pytest.raises(ConfigError, match="telephony.telnyx.public_key: String should match pattern"):
        telephony(telnyx={"api_key": "k", "public_key": "not-base64-ed25519"})


def test_plivo_needs_both_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLIVO_AUTH_ID", "MAXXXXXXXXXXXXXXXXXX")
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "tok")
    plivo = telephony(plivo={"api_base_url": "http://127.0.0.1:9/"}).plivo
    assert plivo is not None and (plivo.auth_id, plivo.api_base_url) == ("MAXXXXXXXXXXXXXXXXXX", "http://127.0.0.1:9")
    monkeypatch.delenv("PLIVO_AUTH_TOKEN")
    with pytest.raises(
        ConfigError, match="auth_token is missing: set it here or in the environment as PLIVO_AUTH_TOKEN"
    ):
        telephony(plivo={})


def test_vonage_reads_its_key_from_a_file_and_needs_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VONAGE_APPLICATION_ID", "VONAGE_PRIVATE_KEY", "VONAGE_SIGNATURE_SECRET"):
        monkeypatch.delenv(name, raising=False)
    key = tmp_path / "private.key"
    key.write_text(PEM)
    vonage = telephony(vonage={"application_id": APPLICATION, "private_key_path": str(key)}).vonage
    assert vonage is not None and vonage.private_key is not None
    assert (vonage.private_key.get_secret_value(), vonage.signature_secret) == (PEM, None)
    assert (vonage.api_base_url, vonage.webhook_tolerance_s) == ("https://api.nexmo.com", 300.0)
    with pytest.raises(ConfigError, match="private_key is missing"):
        telephony(vonage={"application_id": APPLICATION})
    with pytest.raises(ConfigError, match="cannot read private_key_path"):
        telephony(vonage={"application_id": APPLICATION, "private_key_path": str(tmp_path / "none")})
