"""`whisper-cpu serve` through the official `openai` client, its errors, and a bounded load test in its own process."""

import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from openai import APIStatusError, AuthenticationError, BadRequestError, OpenAI

from whisper_cpu import registry, serve
from whisper_cpu.bench import inputs, load, results

KEY = "test-key"


@pytest.fixture(scope="module")
def server():
    """The app on a free port in this process, tiny.en on the batched fp32 path (a window's words do not depend on its
    batch there), with an API key and a 4 MB limit."""
    runner = registry.get("fast-fp32-batched").load("tiny.en", 2)
    settings = serve.Settings(model="tiny.en", method="fast-fp32-batched", api_key=KEY, max_bytes=4 * 2**20, queue_size=3, batch_size=4)
    config = uvicorn.Config(serve.create_app(runner, True, settings), host="127.0.0.1", port=load._free_port(), log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    while not instance.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{config.port}/v1"
    instance.should_exit = True
    thread.join(timeout=60)


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
    assert verbose.language == "en" and verbose.duration == pytest.approx(11.0, abs=0.1) and verbose.segments
    americans = next(w for w in verbose.words if "Americans" in w.word)
    assert 1.0 < americans.start < americans.end < 3.5
    with open(path, "rb") as f:
        srt = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> ") and "country" in srt
    with open(path, "rb") as f:
        assert client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text").strip() == plain.text


def test_errors_have_openais_shape(server, client, tmp_path):
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"not audio at all")
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
    data = inputs.locate(clips["whisper_jfk"]).read_bytes()
    answers = []

    def post():
        response = httpx.post(f"{server}/audio/transcriptions", files={"file": ("jfk.flac", data)}, data={"model": "whisper-1"},
                              headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
        answers.append(response)

    posts = [threading.Thread(target=post) for _ in range(8)]
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
    worker = serve.Worker(held, True, serve.Settings(model="tiny.en", method="x", queue_size=4, batch_size=8))
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
