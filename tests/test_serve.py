"""`whisper-cpu serve` through the official `openai` client, its errors, and a bounded load test in its own process."""

import contextlib
import io
import os
import socket
import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import uvicorn
from openai import APIStatusError, AuthenticationError, BadRequestError, NotFoundError, OpenAI

from whisper_cpu import audio, cli, registry, serve
from whisper_cpu.bench import inputs, load, results

KEY = "test-key"
SERVE = ["serve", "--model", "tiny.en", "--method", "fast-fp32-batched", "--threads", str(min(2, len(os.sched_getaffinity(0))))]


def start(argv: list[str], environ: dict, run) -> str:
    """`whisper-cpu serve ARGV` under ENVIRON with `serve.run` replaced by RUN; what it printed."""
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(io.StringIO()) as said:
        patch.delenv("WHISPER_CPU_API_KEY", raising=False)
        for name, value in environ.items():
            patch.setenv(name, value)
        patch.setattr(serve, "run", run)
        cli.main(argv)
    return said.getvalue()


@pytest.fixture(scope="module")
def served():
    """`whisper-cpu serve` as users start it, its API key from $WHISPER_CPU_API_KEY, a 4 MB limit: uvicorn on a free port
    (--port 0) in a thread of this process, tiny.en on the batched fp32 path (a window's words do not depend on its batch there)."""
    got = SimpleNamespace()

    def run(settings, runner, sock):
        got.settings, got.instance = settings, uvicorn.Server(uvicorn.Config(serve.create_app(runner, settings), log_level="warning"))
        got.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        got.thread = threading.Thread(target=got.instance.run, kwargs={"sockets": [sock]}, daemon=True)
        got.thread.start()

    got.said = start([*SERVE, "--port", "0", "--max-mb", "4", "--queue-size", "3", "--batch-size", "4"], {"WHISPER_CPU_API_KEY": KEY}, run)
    while not got.instance.started:
        time.sleep(0.05)
    yield got
    got.instance.should_exit = True
    got.thread.join(timeout=60)


@pytest.fixture(scope="module")
def server(served):
    return served.url


def post(server, path, key=KEY, **fields) -> httpx.Response:
    """A transcription request for the file at PATH, as any HTTP client sends it."""
    return httpx.post(f"{server}/audio/transcriptions", files={"file": (path.name, path.read_bytes())}, data={"model": "whisper-1", **fields},
                      headers={"Authorization": f"Bearer {key}"}, timeout=120)


@pytest.fixture
def client(server):
    return OpenAI(base_url=server, api_key=KEY, max_retries=0)


def test_openai_client_transcribes_in_every_response_format(client, clips, mirror):
    path = inputs.locate(clips["whisper_jfk"])
    with open(path, "rb") as f:
        plain = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert "ask not what your country can do for you" in plain.text.lower()
    with open(path, "rb") as f:
        verbose = client.audio.transcriptions.create(model="tiny.en", file=f, response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert verbose.language == "english" and verbose.duration == pytest.approx(11.0, abs=0.1) and verbose.segments
    americans = next(w for w in verbose.words if w.word == "Americans")  # without openai-whisper's leading space
    assert 1.0 < americans.start < americans.end < 3.5
    with open(path, "rb") as f:  # words alone: no segments, as OpenAI answers
        alone = client.audio.transcriptions.create(model="tiny.en", file=f, response_format="verbose_json", timestamp_granularities=["word"])
    assert alone.words == verbose.words and not getattr(alone, "segments", None)
    with open(path, "rb") as f:
        srt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> ") and "country" in srt
    with open(path, "rb") as f:
        assert client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text").strip() == plain.text


def test_errors_have_openais_shape(server, client, tmp_path, clips, mirror):
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"not audio at all")
    answer = post(server, inputs.locate(clips["deepspeech_LDC93S1"]), **{"timestamp_granularities[]": "char", "response_format": "verbose_json"})
    assert answer.status_code == 400 and answer.json()["error"]["message"] == "timestamp_granularities[] 'char' is not one of word, segment"
    with pytest.raises(BadRequestError, match="cannot decode audio notes.wav"):
        client.audio.transcriptions.create(model="whisper-1", file=bad.open("rb"))
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=server, api_key="wrong", max_retries=0).audio.transcriptions.create(model="whisper-1", file=bad.open("rb"))
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * (4 * 2**20 + 2**17))
    with pytest.raises(APIStatusError) as error:
        client.audio.transcriptions.create(model="whisper-1", file=big.open("rb"))
    assert error.value.status_code == 413
    with pytest.raises(BadRequestError, match="English-only"):
        client.audio.translations.create(model="whisper-1", file=bad.open("rb"))
    with pytest.raises(BadRequestError, match="serves 'tiny.en'"):
        client.audio.transcriptions.create(model="large-v3", file=bad.open("rb"))


def test_concurrent_requests_get_the_same_words_or_a_503(server, clips, mirror):
    path = inputs.locate(clips["whisper_jfk"])
    answers = []
    posts = [threading.Thread(target=lambda: answers.append(post(server, path))) for _ in range(8)]
    for t in posts:
        t.start()
    for t in posts:
        t.join()
    codes = sorted(r.status_code for r in answers)
    assert set(codes) <= {200, 503} and codes.count(200) >= 3 and len(codes) == 8  # a queue of 3: any others are told to retry
    assert len({r.json()["text"] for r in answers if r.status_code == 200}) == 1  # decoded together or alone, the same words
    assert all(r.json()["error"]["type"] == "server_error" for r in answers if r.status_code == 503)


def test_load_test_accounts_for_every_request_and_the_server_stops_gracefully(scratch, clips, mirror):
    clip = inputs.locate(clips["whisper_jfk"])
    row = load.run(load.Options(model="tiny.en", method="fast-qint8-pc-batched", clients=3, seconds=6, threads=2), clip)
    assert row["requests"] >= 3 and row["ok"] == row["requests"] and row["failed"] == row["lost"] == row["empty"] == 0
    assert row["server_exit"] == 0 and row["method"] == "fast-qint8-pc-batched" and 0 < row["p50_ms"] <= row["p95_ms"]
    assert results.read("serve").run_id.tolist() == [row["run_id"]]


class _Held:
    """A runner that decodes only when released, recording how many requests each call held."""

    def __init__(self):
        self.release, self.calls = threading.Event(), []

    def many(self, sources, options, progress=False):
        self.release.wait(30)
        self.calls.append(len(sources))
        return [(s, serve.Transcript(options.language or "", [], "en")) for s in sources]


def test_worker_groups_equal_options_bounds_its_queue_and_drains_on_close():
    held = _Held()
    worker = serve.Worker(held, serve.Settings(model="tiny.en", method="x", queue_size=4, batch_size=8))
    english, german = serve.DecodeOptions(language="en"), serve.DecodeOptions(language="de")
    futures = [worker.submit(np.zeros(16000), english)]
    time.sleep(0.2)  # the worker holds the first request
    futures += [worker.submit(np.zeros(16000), options) for options in (english, german, english)]
    with pytest.raises(serve.Full):
        worker.submit(np.zeros(16000), english)
    held.release.set()
    worker.close()
    assert [f.result().text for f in futures] == ["en", "en", "de", "en"]
    assert held.calls == [1, 2, 1]  # the two waiting English requests in one call, the German one apart


REFUSED = {"error": {"message": "missing or wrong API key: send Authorization: Bearer <key>", "type": "authentication_error", "param": None, "code": None}}


def test_the_api_key_from_the_environment_guards_every_route(served, clips, mirror):
    assert served.said == f"serving tiny.en (fast-fp32-batched) on {served.url} with an API key\n"
    assert served.settings == serve.Settings(model="tiny.en", method="fast-fp32-batched", api_key=KEY, max_bytes=4 * 2**20, queue_size=3, batch_size=4)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        answer = httpx.get(f"{served.url}/models", headers=headers)
        assert (answer.status_code, answer.json()) == (401, REFUSED)
    for scheme in ("bearer", "BEARER"):  # the scheme has no case
        assert httpx.get(f"{served.url}/models", headers={"Authorization": f"{scheme} {KEY}"}).status_code == 200
    answer = post(served.url, inputs.locate(clips["deepspeech_LDC93S1"]), key="wrong")
    assert (answer.status_code, answer.json()) == (401, REFUSED)


@pytest.mark.parametrize("flag, key", [((), None), (("--api-key", "from-flag"), "from-flag")])
def test_the_api_key_flag_wins_over_the_environment_and_none_means_open(monkeypatch, flag, key):
    monkeypatch.setattr(cli.transcribe, "load", lambda opts, log: (SimpleNamespace(batch_size=8), registry.get("fast-fp32-batched")))
    seen = []

    def run(settings, runner, sock):
        with sock:
            seen.append((settings, sock.getsockname()[1]))

    said = start([*SERVE, "--port", "0", *flag], {"WHISPER_CPU_API_KEY": "from-env"} if flag else {}, run)
    [(settings, port)] = seen
    assert settings == serve.Settings(model="tiny.en", method="fast-fp32-batched", api_key=key, batch_size=8)
    assert said == f"serving tiny.en (fast-fp32-batched) on http://127.0.0.1:{port}/v1 {'with' if key else 'without'} an API key\n"


def test_a_taken_port_is_said_in_one_line_before_the_model_loads(monkeypatch, capsys):
    monkeypatch.setattr(cli.transcribe, "load", lambda opts, log: pytest.fail("the model loaded"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main([*SERVE, "--port", str(port)]) == 2
    assert capsys.readouterr().err == f"whisper-cpu: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_models_lists_the_loaded_model_and_whisper_1(server):
    answer = httpx.get(f"{server}/models", headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200 and answer.json() == {"object": "list", "data": [
        {"id": "tiny.en", "object": "model", "owned_by": "whisper-cpu"}, {"id": "whisper-1", "object": "model", "owned_by": "whisper-cpu"}]}


def test_a_silent_upload_is_a_400(server, tmp_path):
    silent = tmp_path / "silent.wav"
    audio.write_wav(silent, np.zeros(2 * audio.SAMPLE_RATE, dtype=np.float32))
    answer = post(server, silent)
    assert (answer.status_code, answer.json()) == (400, {"error": {"message": "no signal (silence)", "type": "invalid_request_error",
                                                                   "param": None, "code": None}})


def test_vtt_is_webvtt_cue_by_cue(server, clips, mirror):
    answer = post(server, inputs.locate(clips["whisper_jfk"]), response_format="vtt")
    assert answer.headers["content-type"] == "text/plain; charset=utf-8" and answer.text == (
        "WEBVTT\n\n"
        "00:00.000 --> 00:07.740\nAnd so my fellow Americans ask not what your country can do for you\n\n"
        "00:07.740 --> 00:10.740\nask what you can do for your country\n\n")


def test_the_prompt_steers_the_spelling(server, clips, mirror):
    path = inputs.locate(clips["deepspeech_LDC93S1"])
    assert post(server, path, response_format="text").text == "She had your dog suit and greasy wash water all year.\n"
    assert post(server, path, response_format="text", prompt="Greasy wash-water.").text == "She had your dog suit in Greasy wash-water all year.\n"


def test_temperature_replaces_the_fallback_schedule(server, clips, mirror):
    path = inputs.locate(clips["deepspeech_LDC93S1"])
    assert [s["temperature"] for s in post(server, path, response_format="verbose_json").json()["segments"]] == [0.0]
    assert {s["temperature"] for s in post(server, path, response_format="verbose_json", temperature="0.6").json()["segments"]} == {0.6}
    assert serve.request_options("base", "transcribe", None, "", 0.6, False) == serve.DecodeOptions(temperature=(0.6,))


def test_language_is_read_by_code_or_name_and_checked_against_the_model(server, clips, mirror):
    path = inputs.locate(clips["deepspeech_LDC93S1"])
    assert post(server, path, language="English", response_format="verbose_json").json()["language"] == "english"
    for language, message in (("de", "tiny.en is English-only: use a multilingual model (e.g. base) for 'de'"),
                              ("klingon", "unknown language 'klingon': use a code such as en, de, fr or a name such as german")):
        answer = post(server, path, language=language)
        assert (answer.status_code, answer.json()["error"]["message"]) == (400, message)
    assert serve.request_options("base", "transcribe", "German", "Hi.", 0.0, True) == serve.DecodeOptions(
        language="de", initial_prompt="Hi.", word_timestamps=True)


def test_what_openai_refuses_is_a_400_and_what_is_no_route_a_404_in_openais_shape(server, client, clips, mirror):
    path = inputs.locate(clips["deepspeech_LDC93S1"])
    for temperature in (-1.0, 5.0, float("nan")):
        with pytest.raises(BadRequestError, match=f"temperature {temperature} is not between 0 and 1"):
            client.audio.transcriptions.create(model="whisper-1", file=path.open("rb"), temperature=temperature)
    headers = {"Authorization": f"Bearer {KEY}"}
    for name, data, answer in ((None, path.read_bytes(), "file: send the audio as a file: a multipart part with a filename"),
                               ("notes." + "x" * 300, b"not audio", "cannot decode audio notes.xxx")):
        refused = httpx.post(f"{server}/audio/transcriptions", files={"file": (name, data)}, data={"model": "whisper-1"}, headers=headers)
        assert refused.status_code == 400 and refused.json()["error"]["message"].startswith(answer)
    named = httpx.post(f"{server}/audio/transcriptions", files={"file": ("talk." + "x" * 300, path.read_bytes())}, data={"model": "whisper-1"},
                       headers=headers, timeout=120)
    assert named.json() == {"text": "She had your dog suit and greasy wash water all year."}  # an extension that is none: the content decides
    with pytest.raises(NotFoundError) as missing:
        client.models.retrieve("tiny.en")
    assert missing.value.body == {"message": "Not Found: GET /v1/models/tiny.en", "type": "invalid_request_error", "param": None, "code": None}
