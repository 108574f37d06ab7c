"""Settings: defaults, the bundled benchmark file, and exact errors naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringline.config.settings import (
    BUNDLED,
    AgentConfig,
    FakeLlmConfig,
    FakeSttConfig,
    FakeTtsConfig,
    InterruptionConfig,
    Settings,
    TurnConfig,
    VadConfig,
    load_settings,
)
from ringline.engine.errors import ConfigError, RinglineError


def write(tmp_path: Path, text: str | bytes, name: str = "ringline.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, toml: str) -> tuple[Path, str]:
    path = write(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return path, str(info.value)


# -- defaults -------------------------------------------------------------------------------------


def test_nothing_given_loads_the_defaults() -> None:
    settings = load_settings()
    assert settings == Settings()
    assert settings.default_agent == "default"
    assert list(settings.agents) == ["default"]
    assert settings.agents["default"] == AgentConfig()


def test_empty_file_loads_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == Settings()


def test_documented_defaults() -> None:
    agent = AgentConfig()
    assert agent.first_speaker == "agent"
    vad = agent.vad
    assert (vad.aggressiveness, vad.start_ms, vad.start_window_ms, vad.stop_ms) == (3, 60, 100, 160)
    assert agent.vad.energy_floor_dbfs == -50.0
    turn = agent.turn
    assert (turn.silence_ms, turn.sentence_end_silence_ms, turn.continuation_silence_ms) == (500, 300, 1200)
    assert turn.final_timeout_ms == 1500
    assert "and" in turn.continuation_words and "um" in turn.continuation_words
    barge = agent.interruption
    assert (barge.enabled, barge.min_speech_ms, barge.min_words, barge.false_interruption_timeout_ms) == (
        True,
        100,
        0,
        1000,
    )
    assert (agent.playout.lead_ms, agent.playout.frame_ms) == (200, 20)
    assert agent.max_tool_rounds == 4
    server = Settings().server
    assert (server.host, server.port) == ("127.0.0.1", 8080)


def test_default_silences_satisfy_the_stop_rule() -> None:
    agent = AgentConfig()
    assert min(agent.turn.silence_ms, agent.turn.sentence_end_silence_ms) >= agent.vad.stop_ms


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.default_agent = "other"  # type: ignore[misc]


@pytest.mark.parametrize("name", [None, "", "default"])
def test_agent_by_name_or_default(name: str | None) -> None:
    settings = load_settings(data={"agents": {"default": {"name": "Front desk"}, "sales": {"name": "Sales"}}})
    assert settings.agent(name).name == "Front desk"
    assert settings.agent("sales").name == "Sales"


def test_agent_default_follows_default_agent() -> None:
    settings = load_settings(data={"default_agent": "sales", "agents": {"sales": {"name": "Sales"}}})
    assert settings.agent(None).name == "Sales"


def test_unknown_agent() -> None:
    with pytest.raises(ConfigError) as info:
        Settings().agent("nobody")
    assert str(info.value) == "unknown agent 'nobody'"


def test_config_error_is_a_ringline_error() -> None:
    assert issubclass(ConfigError, RinglineError)


# -- the benchmark settings -----------------------------------------------------------------------


def test_bench_toml_has_the_values_its_comment_promises() -> None:
    path = BUNDLED / "bench.toml"
    comment = " ".join(path.read_text().splitlines()[:2])
    assert "zero latency" in comment and "1.0 s of 8 kHz" in comment and "200 ms" in comment
    agent = load_settings(path).agent(None)
    assert (agent.stt.final_latency_ms, agent.llm.ttft_ms, agent.llm.tokens_per_s) == (0, 0, 0)
    assert (agent.tts.ttfb_ms, agent.tts.realtime_factor) == (0, 0)
    assert agent.tts.seconds_per_phrase == 1.0
    assert agent.tts.sample_rate == 8000
    assert (agent.turn.silence_ms, agent.turn.sentence_end_silence_ms, agent.turn.continuation_silence_ms) == (
        200,
        200,
        200,
    )
    assert agent.vad.stop_ms <= 200
    assert agent.first_speaker == "caller"


def test_bench_toml_is_in_the_package() -> None:
    assert (BUNDLED / "bench.toml").is_file()
    assert Path(load_settings.__code__.co_filename).parent == BUNDLED


# -- a file's values ------------------------------------------------------------------------------


def test_file_values_override_defaults_and_keep_the_rest(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
default_agent = "support"

[server]
port = 9000

[agents.support]
first_message = "Hello, how can I help?"

[agents.support.turn]
silence_ms = 700
continuation_words = ["and", "well"]

[agents.support.llm]
replies = ["One.", "Two."]
""",
    )
    settings = load_settings(path)
    agent = settings.agent(None)
    assert settings.server.port == 9000
    assert settings.server.host == "127.0.0.1"
    assert agent.first_message == "Hello, how can I help?"
    assert agent.turn.silence_ms == 700
    assert agent.turn.sentence_end_silence_ms == 300
    assert agent.turn.continuation_words == ("and", "well")
    assert agent.llm.replies == ("One.", "Two.")
    assert agent.interruption == InterruptionConfig()


def test_path_may_be_a_string(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9001\n")
    assert load_settings(str(path)).server.port == 9001


# -- errors name what is wrong ---------------------------------------------------------------------


def test_unknown_key(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "[agents.default.turn]\nsilence = 500\n")
    assert message == f"config {path} is invalid:\n  agents.default.turn.silence: Extra inputs are not permitted"


def test_unknown_top_level_section(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "[servers]\nport = 1\n")
    assert message == f"config {path} is invalid:\n  servers: Extra inputs are not permitted"


WRONG_TYPES = [
    (
        '[agents.default.turn]\nsilence_ms = "soon"\n',
        "agents.default.turn.silence_ms: Input should be a valid number, unable to parse string as a number",
    ),
    (
        '[agents.default.turn]\ncontinuation_words = "and"\n',
        "agents.default.turn.continuation_words: Input should be a valid tuple",
    ),
    ("[server]\nport = [8080]\n", "server.port: Input should be a valid integer"),
    (
        '[agents.default]\nfirst_speaker = "robot"\n',
        "agents.default.first_speaker: Input should be 'agent' or 'caller'",
    ),
    ("[agents.default]\nname = 5\n", "agents.default.name: Input should be a valid string"),
    (
        '[agents.default.interruption]\nenabled = "sometimes"\n',
        "agents.default.interruption.enabled: Input should be a valid boolean, unable to interpret input",
    ),
    ("agents = 3\n", "agents: Input should be a valid dictionary"),
    (
        '[agents.default.stt]\nprovider = "deepgram"\n',
        "agents.default.stt: Value error, api_key is missing: set it here or in the environment as DEEPGRAM_API_KEY",
    ),
    (
        '[agents.default.stt]\nprovider = "whisperx"\n',
        "agents.default.stt: Input tag 'whisperx' found using _provider() does not match any of the expected tags:"
        " 'fake', 'deepgram', 'whisper', 'moonshine'",
    ),
]


@pytest.mark.parametrize(("toml", "line"), WRONG_TYPES)
def test_wrong_type(tmp_path: Path, toml: str, line: str) -> None:
    path, message = error_of(tmp_path, toml)
    assert message == f"config {path} is invalid:\n  {line}"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("agents.default.vad", "stop_ms"),
        ("agents.default.vad", "start_ms"),
        ("agents.default.turn", "silence_ms"),
        ("agents.default.turn", "final_timeout_ms"),
        ("agents.default.interruption", "min_speech_ms"),
        ("agents.default.llm", "ttft_ms"),
        ("agents.default.tts", "ttfb_ms"),
        ("agents.default.playout", "lead_ms"),
    ],
)
def test_negative_ms(tmp_path: Path, section: str, key: str) -> None:
    path, message = error_of(tmp_path, f"[{section}]\n{key} = -1\n")
    assert message == f"config {path} is invalid:\n  {section}.{key}: Input should be greater than or equal to 0"


OUT_OF_RANGE = [
    (
        "[agents.default.vad]\naggressiveness = 4\n",
        "agents.default.vad.aggressiveness: Input should be less than or equal to 3",
    ),
    ("[server]\nport = 70000\n", "server.port: Input should be less than or equal to 65535"),
    ("[agents.default.tts]\nsample_rate = 0\n", "agents.default.tts.sample_rate: Input should be greater than 0"),
    (
        "[agents.default]\nmax_tool_rounds = 0\n",
        "agents.default.max_tool_rounds: Input should be greater than or equal to 1",
    ),
    (
        "[agents.default.vad]\nenergy_floor_dbfs = 3.0\n",
        "agents.default.vad.energy_floor_dbfs: Input should be less than or equal to 0",
    ),
]


@pytest.mark.parametrize(("toml", "line"), OUT_OF_RANGE)
def test_out_of_range(tmp_path: Path, toml: str, line: str) -> None:
    path, message = error_of(tmp_path, toml)
    assert message == f"config {path} is invalid:\n  {line}"


def test_every_error_is_listed(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, "[server]\nport = -1\nhost = 1\n[agents.default.vad]\nstop_ms = -5\n")
    assert message.splitlines() == [
        f"config {path} is invalid:",
        "  server.host: Input should be a valid string",
        "  server.port: Input should be greater than or equal to 0",
        "  agents.default.vad.stop_ms: Input should be greater than or equal to 0",
    ]


@pytest.mark.parametrize("key", ["silence_ms", "sentence_end_silence_ms", "continuation_silence_ms"])
def test_turn_silence_below_vad_stop(tmp_path: Path, key: str) -> None:
    """A silence shorter than the VAD's stop could never be honoured: refused at load."""
    toml = f'default_agent = "support"\n[agents.support.vad]\nstop_ms = 160\n[agents.support.turn]\n{key} = 100\n'
    path, message = error_of(tmp_path, toml)
    assert message == (
        f"config {path} is invalid:\n"
        f"  agents.support: Value error, turn.{key} (100 ms) must be at least vad.stop_ms (160 ms)"
    )


def test_turn_silence_equal_to_vad_stop_is_fine() -> None:
    turn = {"silence_ms": 200, "sentence_end_silence_ms": 200}
    agent = load_settings(data={"agents": {"default": {"vad": {"stop_ms": 200}, "turn": turn}}}).agent(None)
    assert agent.turn.silence_ms == agent.vad.stop_ms == 200


def test_raising_vad_stop_above_the_default_silences_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(data={"agents": {"default": {"vad": {"stop_ms": 400}}}})
    assert str(info.value) == (
        "config is invalid:\n"
        "  agents.default: Value error, turn.sentence_end_silence_ms (300 ms) must be at least vad.stop_ms (400 ms)"
    )


def test_default_agent_not_among_agents(tmp_path: Path) -> None:
    path, message = error_of(tmp_path, 'default_agent = "sales"\n[agents.support]\nname = "Support"\n')
    assert message == (
        f"config {path} is invalid:\n  (top): Value error, default_agent 'sales' is not among agents ['support']"
    )


def test_no_agents_at_all(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(data={"agents": {}})
    assert str(info.value) == "config is invalid:\n  (top): Value error, default_agent 'default' is not among agents []"


def test_dict_errors_say_config_without_a_path() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(data={"server": {"port": "high"}})
    assert str(info.value) == (
        "config is invalid:\n  server.port: Input should be a valid integer, unable to parse string as an integer"
    )


# -- files that cannot be read --------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"cannot read config {path}: No such file or directory"
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(info.value) == f"cannot read config {tmp_path}: Is a directory"


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        ("port = \n", "(at line 1, column 8)"),
        ("[server]\nport = 1\nport = 2\n", "(at line 3, column"),
        ('[agents.default\nname = "x"\n', "(at line 1, column"),
        ('name = "unterminated\n', "(at line 1, column"),
    ],
)
def test_invalid_toml(tmp_path: Path, toml: str, where: str) -> None:
    path, message = error_of(tmp_path, toml)
    assert message.startswith(f"config {path} is not valid TOML: ")
    assert where in message


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, b'[agents.default]\nname = "Caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"config {path} is not valid TOML: ")


# -- the models on their own -----------------------------------------------------------------------


def test_models_refuse_unknown_fields_directly() -> None:
    for model in (VadConfig, TurnConfig, InterruptionConfig, FakeSttConfig, FakeLlmConfig, FakeTtsConfig):
        with pytest.raises(ValueError, match="Extra inputs are not permitted"):
            model(bogus=1)


def test_placeholders_are_filled_from_call_variables_over_agent_defaults():
    from ringline.config.templates import for_call, placeholders, render

    agent = AgentConfig(
        system_prompt="You call {{ name }} about order {{order}} for {{shop}}.",
        first_message="Hi {{name}}, it's {{shop}}. {{unknown}}",
        variables={"shop": "Ringline Bistro", "name": "there"},
        timezone="Europe/Paris",
    )
    filled = for_call(agent, {"name": "Ada", "order": "A-17"})
    assert filled.system_prompt == "You call Ada about order A-17 for Ringline Bistro."
    assert filled.first_message == "Hi Ada, it's Ringline Bistro. {{unknown}}"  # no value: left as written
    assert for_call(agent).first_message == "Hi there, it's Ringline Bistro. {{unknown}}"
    assert placeholders(agent.system_prompt) == {"name", "order", "shop"}
    assert (
        render("{{now}}", {}) == "{{now}}"
        and "{{now}}" not in for_call(AgentConfig(system_prompt="{{now}}")).system_prompt
    )


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("timezone", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("language", "english please", "String should match pattern"),
        ("variables", {"bad name": "x"}, "String should match pattern"),
        ("name", "", "String should have at least 1 character"),
    ],
)
def test_agent_fields_are_validated_with_the_field_named(field, value, error):
    with pytest.raises(ConfigError) as exc:
        load_settings(data={"agents": {"default": {field: value}}})
    assert f"agents.default.{field}" in str(exc.value) and error in str(exc.value)
