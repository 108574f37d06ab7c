"""Silero VAD: the ONNX model shipped in the ``silero-vad`` package, run with onnxruntime.

The package is never imported: its ``__init__`` imports torch. Its directory is found with
``importlib.util.find_spec``, which for a top-level package returns the spec without running
``__init__``, and ``data/silero_vad.onnx`` is loaded by path. The package declares torch as a
hard dependency, so it is installed with ``pip install --no-deps silero-vad``.

The model (v5/v6; what the package's ``utils_vad.OnnxWrapper`` does, without torch) takes a
window of 256 samples at 8 kHz or 512 at 16 kHz (32 ms) as float32 in [-1, 1), preceded by the
last 32 / 64 samples of the window before (zeros before the first), the recurrent ``state``
[2, 1, 128] and the rate ``sr``; it returns the window's speech probability and the next state.

A 20 ms frame holds 160 / 320 samples, so samples are buffered across frames and the model runs
on 5 frames of every 8, whenever a window is complete. Each frame is answered with the latest
window's probability through Silero's own hysteresis (``VADIterator``): voiced from
``threshold`` up, unvoiced again below ``threshold - 0.15``. That answer lags the audio by up
to a window (32 ms) plus the model's own latency, and on the speech clips in ``benchmarks/audio``
stays voiced 40-150 ms after speech ends; as with webrtcvad, a frame quieter than the energy
floor is never speech, which trims that tail to the end of the last audible frame.

One ``InferenceSession`` per process serves every call (its ``run`` is thread-safe); the state,
context and sample buffer are per call, in ``SileroClassifier``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ringline.engine.audio.g711 import rms
from ringline.engine.errors import ConfigError

if TYPE_CHECKING:
    import onnxruntime

PACKAGE = "silero_vad"
"""The import name of the ``silero-vad`` distribution."""
MODEL_FILE = "silero_vad.onnx"
"""The package's default ONNX model (opset 16), for 8 and 16 kHz."""
INSTALL_HINT = "pip install --no-deps silero-vad"

_WINDOW = {8000: 256, 16000: 512}
"""Samples per model run, by sample rate."""
_CONTEXT = {8000: 32, 16000: 64}
"""Samples of the previous window prepended to each window, by sample rate."""
_NEG_OFFSET = 0.15
"""Speech ends below ``threshold`` minus this (as in Silero's ``VADIterator``)."""
_SCALE = np.float32(1 / 32768)
_I16 = np.dtype("<i2")


class Runner(Protocol):
    """What the classifier needs of an ``onnxruntime.InferenceSession``."""

    def run(self, output_names: Any, input_feed: dict[str, Any]) -> list[Any]: ...


_lock = threading.Lock()
_sessions: dict[Path, onnxruntime.InferenceSession] = {}


def model_path(package: str = PACKAGE) -> Path:
    """The path of ``silero_vad.onnx`` inside the installed ``package``, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"vad.engine 'silero' needs the silero-vad package, which is not installed: run `{INSTALL_HINT}` "
            "(--no-deps: it declares torch, which Ringline does not use)"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"the installed silero-vad package has no {MODEL_FILE} (looked for {path})")
    return path


def load_model(package: str = PACKAGE) -> onnxruntime.InferenceSession:
    """The process's Silero session, loaded on first use (~75 ms) and shared by every call."""
    path = model_path(package)
    with _lock:
        session = _sessions.get(path)
        if session is None:
            session = _sessions[path] = _open(path)
    return session


def _open(path: Path) -> onnxruntime.InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One window is ~100 us of work: threads would cost more to wake than they save, and on a
    # loaded server every core is busy with calls already.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for a bad file
        raise ConfigError(f"cannot load the Silero VAD model {path}: {exc}") from None


async def warm_up(package: str = PACKAGE) -> None:
    """Load the model (once per process) and run one window, off the event loop, so that a
    missing package is reported at start-up and the first caller does not wait for the load."""

    def load_and_run() -> None:
        classifier = SileroClassifier(8000, session=load_model(package))
        classifier.is_speech(bytes(2 * _WINDOW[8000]))

    await asyncio.to_thread(load_and_run)


class SileroClassifier:
    """One call's Silero VAD: a ``SpeechClassifier`` for PCM16 frames of any length at 8 or 16 kHz.

    Cost on the frame path (``python -m ringline.benchmarks.frame_budget``, 2-core x86_64 VM,
    onnxruntime 1.31, one thread): a model run is ~120 us at 8 kHz (~145 us at 16 kHz), so a
    20 ms frame costs ~80 us on average at 8 kHz (~107 us at 16 kHz), against ~2 us for
    webrtcvad. That is under the ~200 us a frame may take inline, so ``session.run`` runs on the
    event loop: handing it to an executor thread costs ~120 us a round trip even for a no-op,
    as much as the inference, and the frame would wait for the answer anyway.
    """

    def __init__(
        self,
        sample_rate: int,
        threshold: float = 0.5,
        energy_floor_dbfs: float = -50.0,
        *,
        session: Runner | None = None,
    ) -> None:
        if sample_rate not in _WINDOW:
            raise ValueError(f"Silero VAD takes 8000 or 16000 Hz audio, got {sample_rate} Hz")
        if not 0 < threshold < 1:
            raise ValueError(f"Silero threshold must be between 0 and 1, got {threshold}")
        self._session = session if session is not None else load_model()
        self._window = _WINDOW[sample_rate]
        self._context = _CONTEXT[sample_rate]
        self._sr = np.array(sample_rate, dtype=np.int64)
        self._threshold = threshold
        self._neg_threshold = max(threshold - _NEG_OFFSET, 0.01)
        self._floor = 32768 * 10 ** (energy_floor_dbfs / 20)  # RMS in PCM16 units
        self._input = np.zeros((1, self._context + self._window), dtype=np.float32)
        """The model input: context, then the window being filled (raw PCM16 values until it runs)."""
        self._filled = 0
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self.probability = 0.0
        """Speech probability of the latest complete window (0 before the first)."""
        self._voiced = False

    def is_speech(self, frame: bytes) -> bool:
        samples = np.frombuffer(frame, dtype=_I16)
        buf, start, window = self._input[0], self._context, self._window
        pos, count = 0, len(samples)
        while pos < count:
            take = min(window - self._filled, count - pos)
            at = start + self._filled
            buf[at : at + take] = samples[pos : pos + take]
            self._filled += take
            pos += take
            if self._filled == window:
                self._run()
        p = self.probability
        if p >= self._threshold:
            self._voiced = True
        elif p < self._neg_threshold:
            self._voiced = False
        return self._voiced and rms(frame) >= self._floor

    def _run(self) -> None:
        buf = self._input
        buf[0, self._context :] *= _SCALE
        out, self._state = self._session.run(None, {"input": buf, "state": self._state, "sr": self._sr})
        buf[0, : self._context] = buf[0, -self._context :]
        self._filled = 0
        self.probability = float(out[0, 0])
