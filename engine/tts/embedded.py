"""What the embedded speech engines (Piper, eSpeak NG) share: synthesis on worker threads, never
on the event loop, with the audio handed to the loop as it is produced.

``WorkerJob`` is one phrase on a worker thread: the worker ``emit``s each piece of PCM as it
exists, the loop reads them with ``next_audio``, and ``stop`` (on the loop) asks the worker to
stop at its next check and waits until it has. ``speak_phrases`` is the ``Tts.stream`` loop
around it: each phrase as it arrives is started, and its audio yielded under the phrase's index.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ringline.engine.audio.clock import Clock
from ringline.engine.audio.formats import AudioChunk, AudioFormat
from ringline.engine.errors import ProviderError
from ringline.engine.tts.base import SpeechAudio

log = logging.getLogger(__name__)

_END = object()
"""Queue item: the job produced everything it will."""


class WorkerJob:
    """One phrase synthesized on a worker thread. The worker calls ``emit`` with each piece of
    PCM as it exists; the loop reads them with ``next_audio``. ``stop`` (on the loop) asks the
    worker to stop at its next check (``cancelled``) and waits until it has."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._future: Future[None] | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Ask the worker to stop (thread-safe, idempotent). Subclasses also interrupt inference."""
        self._cancelled.set()

    def start(self, pool: ThreadPoolExecutor, produce: Callable[[WorkerJob], None]) -> None:
        self._future = pool.submit(self._run, produce)

    # worker side

    def emit(self, pcm: bytes) -> bool:
        """Hand ``pcm`` to the loop. False once nobody wants more: the worker should stop."""
        return self._put(pcm)

    def _put(self, item: Any) -> bool:
        if self.cancelled:
            return False
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening
            self._cancelled.set()
            return False
        return True

    def _run(self, produce: Callable[[WorkerJob], None]) -> None:
        try:
            produce(self)
        except ProviderError as exc:
            self._put(exc)
            return
        except Exception as exc:
            if not self.cancelled:  # an interrupted inference fails on purpose
                log.warning("%s synthesis failed", self.name, exc_info=True)  # the worker's traceback
                error = ProviderError(f"{self.name} synthesis failed: {exc}")
                error.__cause__ = exc
                self._put(error)
            return
        self._put(_END)

    # loop side

    async def next_audio(self) -> bytes | None:
        """All the audio produced since the last call (waiting for some), or None at the end."""
        queue = self._queue
        item = await queue.get()
        pieces: list[bytes] = []
        while isinstance(item, bytes):
            pieces.append(item)
            if queue.empty():
                return b"".join(pieces)
            item = queue.get_nowait()
        if pieces:  # the end (or a failure) comes on the next call
            queue.put_nowait(item)  # nothing else puts before it: the worker has finished
            return b"".join(pieces)
        if isinstance(item, BaseException):
            raise item
        return None

    async def stop(self) -> None:
        """Stop the worker (if it still runs) and wait until it has: nothing outlives the phrase."""
        self.cancel()
        future = self._future
        if future is None or future.cancel() or future.done():
            return
        # asyncio.wait does not cancel what it waits for: a second cancellation leaves the
        # (already told) worker to finish on its own.
        await asyncio.wait([asyncio.wrap_future(future)])


async def speak_phrases(
    phrases: AsyncIterator[str], start: Callable[[str], WorkerJob], fmt: AudioFormat, clock: Clock
) -> AsyncIterator[SpeechAudio]:
    """``Tts.stream`` for a worker-thread engine: each phrase as it arrives is started with
    ``start`` and its audio yielded as it is produced, attributed to the phrase's index."""
    index = -1
    async for text in phrases:
        index += 1
        if not text.strip():
            continue  # nothing to say; the number stays taken
        began = clock.now()
        job = start(text)
        try:
            while (pcm := await job.next_audio()) is not None:
                if began is not None:
                    log.debug("%s phrase %d: first audio in %.0f ms", job.name, index, (clock.now() - began) * 1000)
                    began = None
                yield SpeechAudio(index, AudioChunk(pcm, fmt))
        finally:
            await job.stop()
