"""Credential lookup order: argument, then environment, then `fnrelay login`'s file."""

import stat

import pytest

from fnrelay import config
from fnrelay.errors import ConfigurationError


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv(config.ENV_HOME, str(tmp_path))
    monkeypatch.delenv(config.ENV_BROKER_URL, raising=False)
    monkeypatch.delenv(config.ENV_TOKEN, raising=False)
    return tmp_path


def test_missing_credentials_explain_how_to_log_in(home):
    with pytest.raises(ConfigurationError, match="fnrelay login"):
        config.resolve_credentials()


def test_saved_credentials_are_private_and_used(home):
    path = config.save_credentials("http://b:8000/", "tok")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = config.resolve_credentials()
    assert (creds.broker_url, creds.token) == ("http://b:8000", "tok")


def test_environment_beats_file_and_argument_beats_environment(home, monkeypatch):
    config.save_credentials("http://file", "file-token")
    monkeypatch.setenv(config.ENV_TOKEN, "env-token")
    assert config.resolve_credentials().token == "env-token"
    assert config.resolve_credentials(token="arg").token == "arg"
    assert config.resolve_credentials().broker_url == "http://file"


def test_a_saved_token_is_never_sent_to_another_broker(home):
    """A URL given as an argument or in FNRELAY_BROKER_URL does not collect the token saved
    for another broker: a "log in to our broker" link must not harvest tokens."""
    config.save_credentials("http://real:8000/", "real-token")
    assert config.resolve_credentials("http://real:8000").token == "real-token"
    with pytest.raises(ConfigurationError, match="saved token is for http://real:8000"):
        config.resolve_credentials("https://evil.example")
    assert config.resolve_credentials("https://evil.example", require_token=False).token == ""
