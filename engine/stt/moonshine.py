"""Embedded Moonshine: the ``base-en`` ONNX weights shipped in ``moonshine-cpp``, run with onnxruntime.

The package's own native library is not used (it needs AVX-512); nor is it imported, since
importing it loads that library. Its directory is found with ``importlib.util.find_spec``.

The model is Hugging Face's export: ``encoder_model`` takes raw 16 kHz samples (the
preprocessor is inside it) and gives hidden states; ``decoder_model_merged`` takes the tokens so
far, the hidden states and the key/value cache, with ``use_cache_branch`` false on the first step
(which also computes the cross-attention cache, kept from then on). Decoding is greedy from
token 1 until token 2 or ``_TOKENS_PER_S`` tokens a second of audio. ``tokenizer.bin`` lists
each token's bytes, length-prefixed, in id order (SentencePiece with byte fallback: ids 3-258
are the raw bytes, "▁" is a space).

The package ships ORT-format files whose weights are stored as 8-bit integers and dequantized
by ``Cast``/``Mul``/``Add`` nodes on every run (onnx-shrink-ray): ~250 ms a decoder step, ~5 s
for a 2 s utterance. ORT does not constant-fold an ORT-format model, so ``_graph`` has
onnxruntime write the graph out as ONNX, names its ``If`` subgraphs (the ONNX checker requires
it), and loads that: the dequantization folds at load into float weights, ~25 ms a step, for a
4 s load and ~590 MB resident. (Re-quantizing the folded graph with onnxruntime's dynamic int8
was no faster here, took 20 s to load, and lost words with signed per-tensor weights.)
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from ringline.config.providers import MoonshineSttConfig
from ringline.engine.audio.clock import Clock
from ringline.engine.errors import ConfigError
from ringline.engine.stt.segments import SAMPLE_RATE, EmbeddedStt, warm_up_engine

_START, _END = 1, 2
_TOKENS_PER_S = 6.5
_EXTRA_TOKENS = 6
_MIN_S = 0.5
"""Shorter audio is padded with silence (the encoder needs ~60 ms at the very least)."""
_SPACE = "\u2581".encode()


def model_dir(model: str) -> Path:
    """The directory of ``model``: ``base-en`` (shipped in moonshine-cpp) or a directory path."""
    if os.path.isdir(model):
        return Path(model)
    spec = importlib.util.find_spec("moonshine_cpp")  # finds the package without importing it
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(spec.submodule_search_locations[0]) / "models" / model
        if model == "base-en" and bundled.is_dir():
            return bundled
    raise ConfigError(f"moonshine model {model!r} is neither bundled (moonshine-cpp has 'base-en') nor a directory")


def read_tokens(path: Path) -> list[bytes]:
    """The bytes of each token of a ``tokenizer.bin``, by id."""
    data = path.read_bytes()
    tokens: list[bytes] = []
    pos = 0
    while pos < len(data):
        size = data[pos]
        pos += 1
        if size >= 128:  # two-byte length
            size = data[pos] * 128 + size - 128
            pos += 1
        tokens.append(data[pos : pos + size])
        pos += size
    return tokens


def _graph(path: Path) -> str | bytes:
    """What to give ``InferenceSession`` for ``path``: an ONNX path as is; an ORT-format model
    re-exported as ONNX bytes, so that its constant weights fold at load."""
    if path.suffix != ".ort":
        return str(path)
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ringline-moonshine-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.optimized_model_filepath = os.path.join(tmp, "model.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(options.optimized_model_filepath)
    graphs = [model.graph]
    while graphs:
        for node in graphs.pop().node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    attribute.g.name = attribute.g.name or f"{node.name}.{attribute.name}"
                    graphs.append(attribute.g)
    return model.SerializeToString()


def _return_free_memory() -> None:
    """Hand the heap freed by the conversion back to the system (glibc keeps ~300 MB otherwise)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def _find(directory: Path, stem: str) -> Path:
    for suffix in (".onnx", ".ort"):
        if (path := directory / (stem + suffix)).is_file():
            return path
    raise ConfigError(f"no {stem}.onnx or {stem}.ort in {directory}")


class MoonshineRecognizer:
    """One loaded model; onnxruntime sessions are safe to run from several threads at once."""

    def __init__(self, config: MoonshineSttConfig) -> None:
        import onnxruntime as ort

        directory = model_dir(config.model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.cpu_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # 2 cores: no busy waits
        cpu = ["CPUExecutionProvider"]
        self._encoder = ort.InferenceSession(_graph(_find(directory, "encoder_model")), options, providers=cpu)
        self._decoder = ort.InferenceSession(_graph(_find(directory, "decoder_model_merged")), options, providers=cpu)
        _return_free_memory()
        self._tokens = read_tokens(directory / "tokenizer.bin")
        caches = [i for i in self._decoder.get_inputs() if i.name.startswith("past_key_values.")]
        _, heads, _, head_dim = caches[0].shape
        self._empty_cache = {i.name: np.zeros((1, heads, 0, head_dim), dtype=np.float32) for i in caches}
        self._outputs = [o.name for o in self._decoder.get_outputs()]
        self._cache_of = {o: "past_key_values." + o.removeprefix("present.") for o in self._outputs[1:]}

    def transcribe(self, audio: np.ndarray) -> str:
        if len(audio) < _MIN_S * SAMPLE_RATE:
            audio = np.pad(audio, (0, int(_MIN_S * SAMPLE_RATE) - len(audio)))
        (hidden,) = self._encoder.run(None, {"input_values": audio[None, :]})
        cache = dict(self._empty_cache)
        ids: list[int] = []
        token = _START
        for step in range(math.ceil(len(audio) / SAMPLE_RATE * _TOKENS_PER_S) + _EXTRA_TOKENS):
            logits, *present = self._decoder.run(
                self._outputs,
                {
                    "input_ids": np.array([[token]], dtype=np.int64),
                    "encoder_hidden_states": hidden,
                    "use_cache_branch": np.array([step > 0]),
                    **cache,
                },
            )
            token = int(logits[0, -1].argmax())
            if token == _END:
                break
            ids.append(token)
            for name, value in zip(self._outputs[1:], present, strict=True):
                if step == 0 or ".decoder." in name:  # the cross-attention cache is made once
                    cache[self._cache_of[name]] = value
        tokens = self._tokens  # the logits have a few more ids than the tokenizer: unused
        text = b"".join(tokens[i] for i in ids if _END < i < len(tokens))
        return text.replace(_SPACE, b" ").decode("utf-8", "replace").strip()


class MoonshineStt(EmbeddedStt):
    def __init__(self, config: MoonshineSttConfig, clock: Clock) -> None:
        super().__init__(config, clock, MoonshineRecognizer)


async def warm_up(config: MoonshineSttConfig) -> None:
    """Load the model (once per process) and run one transcription."""
    await warm_up_engine(config, MoonshineRecognizer)
