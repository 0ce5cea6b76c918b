"""`whisper-cpu serve`: OpenAI's audio API (`/v1/audio/transcriptions`, `/v1/audio/translations`) on one loaded model.

Requests wait in a bounded queue (503 when it is full). One worker thread takes the oldest request and every
other waiting one with the same decoding options, up to the batch size, and decodes them in one call of the
runner: with a batched method their windows go through the decoder together, so concurrent clients share
each pass instead of queueing behind one another. Errors have OpenAI's shape and one line of message: 400 for
audio that does not decode or holds no sound and for parameters OpenAI refuses (a temperature outside [0, 1]), 401
without the API key, 404 for what is not a route, 413 above the size limit. On shutdown the server stops accepting,
answers what it has accepted, then exits.
"""

import asyncio
import contextlib
import io
import re
import signal
import socket
import sys
import tempfile
import threading
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from whisper.tokenizer import LANGUAGES
from whisper.utils import get_writer

from . import UserError
from .audio import SAMPLE_RATE
from .runner import DecodeOptions, Runner, Transcript, read
from .transcribe import language_for

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


@dataclass(frozen=True)
class Settings:
    model: str  # the model loaded, as the server names it
    method: str
    api_key: str | None = None
    max_bytes: int = 25 * 2**20  # OpenAI's own limit per file
    queue_size: int = 64  # requests waiting or being decoded
    batch_size: int = 8  # requests decoded in one call


@dataclass(eq=False)  # a job is itself: its samples are an array
class Job:
    samples: np.ndarray
    options: DecodeOptions
    future: Future


class Full(Exception):
    pass


class Worker:
    """The queue and the thread that decodes it; requests with equal options leave it together."""

    def __init__(self, runner: Runner, settings: Settings):
        self.runner, self.settings = runner, settings
        self.pending: list[Job] = []
        self.busy = 0
        self.closing = False
        self.ready = threading.Condition()
        self.thread = threading.Thread(target=self._loop, name="whisper-cpu-worker", daemon=True)
        self.thread.start()

    def submit(self, samples: np.ndarray, options: DecodeOptions) -> Future:
        with self.ready:
            if self.closing or len(self.pending) + self.busy >= self.settings.queue_size:
                raise Full("the server is busy: its queue is full, retry later")
            job = Job(samples, options, Future())
            self.pending.append(job)
            self.ready.notify()
        return job.future

    def _take(self) -> list[Job] | None:
        with self.ready:
            while not self.pending and not self.closing:
                self.ready.wait()
            if not self.pending:
                return None
            first = self.pending[0]
            group = [j for j in self.pending if j.options == first.options][: self.settings.batch_size]
            self.pending = [j for j in self.pending if j not in group]
            self.busy = len(group)
            return group

    def _loop(self) -> None:
        while (group := self._take()) is not None:
            try:
                self._decode(group)
            except Exception as error:  # noqa: BLE001 - one broken batch must not stop the server
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(error)
            finally:
                with self.ready:
                    self.busy = 0

    def _decode(self, group: list[Job]) -> None:
        for job, (_, transcript) in zip(group, self.runner.many([j.samples for j in group], group[0].options)):
            (job.future.set_exception if isinstance(transcript, Exception) else job.future.set_result)(transcript)

    def close(self) -> None:
        """Decode what was accepted, then stop."""
        with self.ready:
            self.closing = True
            self.ready.notify_all()
        self.thread.join()


def read_upload(data: bytes, name: str) -> np.ndarray:
    """The upload decoded as a file would be (PyAV), with the transcriber's checks for silence and corrupt audio. Its
    name's extension, where it looks like one, is a hint to the decoder: the content decides."""
    suffix = Path(name or "audio").suffix
    with tempfile.NamedTemporaryFile(suffix=suffix if re.fullmatch(r"\.\w{1,16}", suffix) else "") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            return read(Path(tmp.name))
        except UserError as error:
            raise UserError(str(error).replace(tmp.name, name or "the upload")) from None


def request_options(model: str, task: str, language: str | None, prompt: str | None, temperature: float, words: bool) -> DecodeOptions:
    """OpenAI's parameters as openai-whisper's options: temperature 0 means openai-whisper's fallback, as OpenAI documents."""
    if not 0 <= temperature <= 1:  # NaN too
        raise UserError(f"temperature {temperature} is not between 0 and 1")
    options = DecodeOptions(task=task, language=language_for(model, language), initial_prompt=prompt or None, word_timestamps=words)
    if temperature:
        options = replace(options, temperature=(float(temperature),))
    return options


GRANULARITIES = ("word", "segment")


def render(transcript: Transcript, response_format: str, task: str, duration: float, words: bool, segments: bool = True):
    """(body, media type) in OpenAI's response formats; verbose_json has `segments` unless only words were asked for."""
    result = transcript.as_whisper_result()
    if response_format == "text":
        return transcript.text + "\n", "text/plain"
    if response_format in ("srt", "vtt"):
        out = io.StringIO()
        get_writer(response_format, ".").write_result(result, out, {"highlight_words": False, "max_line_width": None,
                                                                    "max_line_count": None, "max_words_per_line": None})
        return out.getvalue(), "text/plain"
    if response_format == "json":
        return {"text": transcript.text}, "application/json"
    body = {"task": task, "language": LANGUAGES.get(transcript.language, transcript.language),  # OpenAI names it: "english"
            "duration": round(duration, 3), "text": transcript.text}
    if segments:
        body["segments"] = [{"id": i, "seek": s.get("seek", 0), "start": s["start"], "end": s["end"], "text": s["text"], "tokens": s.get("tokens", []),
                             "temperature": s.get("temperature", 0.0), "avg_logprob": s.get("avg_logprob"),
                             "compression_ratio": s.get("compression_ratio"), "no_speech_prob": s.get("no_speech_prob")}
                            for i, s in enumerate(transcript.segments)]
    if words:  # without openai-whisper's leading space, as OpenAI gives them
        body["words"] = [{"word": w["word"].strip(), "start": w["start"], "end": w["end"]}
                         for s in transcript.segments for w in s.get("words", [])]
    return body, "application/json"


def create_app(runner: Runner, settings: Settings):
    """The FastAPI application around one loaded runner."""
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from starlette.exceptions import HTTPException

    worker: Worker | None = None

    @asynccontextmanager
    async def lifespan(app):
        nonlocal worker
        worker = Worker(runner, settings)
        yield
        await asyncio.to_thread(worker.close)

    app = FastAPI(title="whisper-cpu", lifespan=lifespan)

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"][1:]) or "request"
        if where == "file" and problem["type"] == "value_error":  # a part without a filename arrives as a form field
            problem["msg"] = "send the audio as a file: a multipart part with a filename"
        return error(400, f"{where}: {problem['msg']}")

    @app.exception_handler(HTTPException)
    async def unrouted(request, exc):
        return error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if settings.api_key and (scheme.lower() != "bearer" or key.strip() != settings.api_key):  # the scheme has no case
            return error(401, "missing or wrong API key: send Authorization: Bearer <key>", "authentication_error")
        if int(request.headers.get("content-length") or 0) > settings.max_bytes + 2**16:
            return error(413, f"the request is larger than the server's limit of {settings.max_bytes // 2**20} MB")
        return await call_next(request)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": settings.model, "object": "model", "owned_by": "whisper-cpu"},
                                           {"id": "whisper-1", "object": "model", "owned_by": "whisper-cpu"}]}

    async def handle(task: str, file: UploadFile, model: str, language: str | None, prompt: str | None, response_format: str,
                     temperature: float, granularities: list[str]):
        if model not in (settings.model, "whisper-1"):
            return error(400, f"this server serves '{settings.model}' (or 'whisper-1'), not '{model}'")
        if response_format not in FORMATS:
            return error(400, f"response_format '{response_format}' is not one of {', '.join(FORMATS)}")
        data = await file.read(settings.max_bytes + 1)
        if len(data) > settings.max_bytes:
            return error(413, f"the file is larger than the server's limit of {settings.max_bytes // 2**20} MB")
        if unknown := [g for g in granularities if g not in GRANULARITIES]:
            return error(400, f"timestamp_granularities[] '{unknown[0]}' is not one of {', '.join(GRANULARITIES)}")
        words = "word" in granularities
        try:
            if task == "translate" and settings.model.endswith(".en"):
                raise UserError(f"{settings.model} is English-only: it cannot translate")
            options = request_options(settings.model, task, language, prompt, temperature, words)
            samples = await asyncio.to_thread(read_upload, data, file.filename)
            transcript = await asyncio.wrap_future(worker.submit(samples, options))
        except Full as busy:
            return error(503, str(busy), "server_error")
        except UserError as problem:
            return error(400, str(problem))
        body, media = render(transcript, response_format, task, len(samples) / SAMPLE_RATE, words, granularities != ["word"])
        return JSONResponse(body) if media == "application/json" else PlainTextResponse(body)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(file: UploadFile = File(...), model: str = Form(...), language: str | None = Form(None),
                             prompt: str | None = Form(None), response_format: str = Form("json"), temperature: float = Form(0.0),
                             timestamp_granularities: list[str] = Form([], alias="timestamp_granularities[]")):
        return await handle("transcribe", file, model, language, prompt, response_format, temperature, timestamp_granularities)

    @app.post("/v1/audio/translations")
    async def translations(file: UploadFile = File(...), model: str = Form(...), prompt: str | None = Form(None),
                           response_format: str = Form("json"), temperature: float = Form(0.0)):
        return await handle("translate", file, model, None, prompt, response_format, temperature, [])

    return app


def bind(host: str, port: int) -> socket.socket:
    """The server's socket, bound as uvicorn would, before the model loads: a taken port is said at once, in one line."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as error:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {getattr(error, 'strerror', None) or error}") from None
    return sock


def run(settings: Settings, runner: Runner, sock: socket.socket) -> None:
    """Serve on SOCK (see `bind`) until interrupted (SIGINT/SIGTERM): uvicorn stops accepting and waits for the requests in flight."""
    import uvicorn

    # uvicorn shuts down gracefully, then raises the signal again under the handler found before it: SIGTERM then exits 0,
    # SIGINT raises KeyboardInterrupt, which uvicorn.run would swallow too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(uvicorn.Config(create_app(runner, settings), timeout_graceful_shutdown=60, log_level="warning")).run(sockets=[sock])
