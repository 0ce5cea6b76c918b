"""The guard: speech that a transcript moved past is found from the detector's regions and decoded again."""

import pytest

from whisper_cpu import guard


def seg(start, end, text):
    return {"start": start, "end": end, "text": text}


SPEECH = [(0.0, 10.0), (11.0, 30.0), (31.0, 40.0)]


def test_a_segment_far_sparser_than_speech_and_a_loop_are_suspect():
    segments = [seg(0, 10, " " + "word " * 20), seg(11, 30, " It will end"), seg(31, 32, " Four."), seg(32, 33, " four."),
                seg(33, 34, " Four."), seg(34, 40, " and the rest of the sentence is said here")]
    assert guard.suspect(segments, SPEECH) == [False, True, True, True, True, False]
    # short of MIN_SPEECH_S of speech, a sparse segment is only loose timing; two repeats are not a loop
    assert guard.suspect([seg(10.0, 12.5, " Yes."), seg(31, 32, " no"), seg(32, 33, " no")], SPEECH) == [False, False, False]


def test_punctuation_over_speech_is_no_words():
    """Seen on a long recording of hard speech: 256 full stops over the first window's 30 s of speech."""
    dots = [seg(0, 30, " ." * 256), seg(31, 40, " and the rest of the sentence is said here")]
    assert guard.suspect(dots, SPEECH) == [True, False] and guard.holes(dots, SPEECH) == [(0.0, 30.0)]
    assert guard.possible(dots, 41.0)
    assert guard.suspect([seg(0, 10, " It's 4:30, ok? " * 3)], SPEECH) == [False]


def test_holes_are_speech_under_no_trusted_segment_joined_where_nothing_trusted_lies_between():
    segments = [seg(0, 10, " " + "word " * 20), seg(11, 30, " It will end"), seg(31, 40, " " + "word " * 20)]
    assert guard.holes(segments, SPEECH) == [(11.0, 30.0)]
    # the seek loop jumped: speech from 11 s to 30 s under no segment at all, and what is left of the last region
    assert guard.holes([seg(0, 10, " " + "word " * 20)], SPEECH) == [(11.0, 40.0)]
    assert guard.holes([seg(0, 10, " " + "word " * 20), seg(12, 30, " " + "word " * 40)], SPEECH) == [(31.0, 40.0)]  # 1 s left at 11 s: loose timing
    assert not guard.possible([seg(0, 10, " " + "word " * 20), seg(11, 40, " " + "word " * 60)], 41.0)
    assert guard.possible([seg(0, 10, " " + "word " * 20)], 41.0)


def test_repair_takes_a_trusted_decode_that_says_more_and_keeps_the_transcript_otherwise():
    segments = [seg(0, 10, " " + "word " * 20), seg(11, 30, " It will end"), seg(31, 40, " " + "tail " * 20)]
    asked = []

    def again(start, end, before):
        asked.append((start, end, before))
        return [seg(11, 20, " the first sentence said again in full"), seg(20, 30, " and the second one, also in full")]

    repaired, n = guard.repair(segments, SPEECH, again)
    assert n == 1 and asked == [(11.0, 30.0, " " + "word " * 20)]
    assert [s["text"] for s in repaired] == [segments[0]["text"], " the first sentence said again in full",
                                             " and the second one, also in full", segments[2]["text"]]
    assert [s["id"] for s in repaired] == [0, 1, 2, 3]
    # a decode that says less, or loops itself, changes nothing
    for decode in ([seg(11, 30, " end")], [seg(11 + i, 12 + i, " Four.") for i in range(5)]):
        kept, n = guard.repair(segments, SPEECH, lambda *_: decode)
        assert n == 0 and [s["text"] for s in kept] == [s["text"] for s in segments]


def test_a_repair_never_overlaps_the_segments_it_keeps():
    """A stretch decoded alone timed its last words past the stretch, over the next kept segment (spontaneous speech:
    1.04-8.70 s beside one kept from 7.70 s): the new segments are cut to the time left free, their words too."""
    segments = [seg(0, 10, " " + "word " * 20), seg(11, 30, " It will end"), seg(31, 40, " " + "tail " * 20)]
    late = seg(20, 33, " and the second one, also in full") | {"words": [{"word": " full", "start": 29.5, "end": 32.5}]}
    decode = [seg(8, 20, " the first sentence said again in full"), late, seg(34, 36, " tail tail tail tail tail tail")]
    repaired, n = guard.repair(segments, SPEECH, lambda *_: decode)
    assert n == 1 and [(s["start"], s["end"]) for s in repaired] == [(0, 10), (10, 20), (20, 31), (31, 40)]
    assert repaired[2]["words"] == [{"word": " full", "start": 29.5, "end": 31}] and late["end"] == 33  # the decode's own are left as they were


def test_a_hole_is_transcribed_again_by_openai_whispers_transcribe_on_that_stretch_prompted_with_the_text_before():
    import numpy as np

    from whisper_cpu.runner import DecodeOptions, guarded

    class Model:  # openai-whisper's transcribe, as far as the guard calls it
        def __init__(self):
            self.calls = []

        def transcribe(self, samples, **kwargs):
            self.calls.append(kwargs | {"samples": samples})
            start, end = kwargs["clip_timestamps"]
            return {"segments": [seg(start, end, " " + "said " * int(2 * (end - start))) | {"seek": int(100 * start), "words": [
                {"word": " said", "start": start, "end": start + 0.5}]}]}

    found = [seg(0, 10, " " + "word " * 20), seg(11, 30, " It will end"), seg(31, 40, " " + "tail " * 20)]
    model = Model()
    samples = np.arange(16000 * 41, dtype=np.float32)
    repaired = guarded(model, samples, found, SPEECH, DecodeOptions(initial_prompt="Names:"), "en")
    (call,) = model.calls
    # the stretch and a second either side, not the whole file: its times are the stretch's, from the slice's start
    assert call["samples"][0] == 10 * 16000 and len(call["samples"]) == 21 * 16000
    assert call["clip_timestamps"] == [1.0, 20.0] and call["language"] == "en" and call["verbose"] is None
    assert call["initial_prompt"] == "Names: " + "word " * 20 and call["temperature"] == DecodeOptions().temperature
    assert [s["text"].split()[0] for s in repaired] == ["word", "said", "tail"]
    said = repaired[1]
    assert (said["start"], said["end"], said["seek"], said["words"][0]["start"]) == (11.0, 30.0, 1100, 11.0)  # the file's times
    guarded(model, samples, found, SPEECH, DecodeOptions(condition_on_previous_text=False), "en")
    assert model.calls[-1]["initial_prompt"] is None


def test_a_repair_on_real_speech_reads_its_stretch_as_the_whole_file_would(tiny, clips, mirror):
    """The stretch and a second either side go to openai-whisper's transcribe: the same words and the file's times as
    when it is handed the whole file (an hour's file, framed whole once per hole, took over a GB)."""
    import numpy as np

    from whisper_cpu import audio, pipeline
    from whisper_cpu.bench import inputs
    from whisper_cpu.runner import DecodeOptions, guarded

    first, second = (audio.load(inputs.locate(clips[name])) for name in ("whisper_jfk", "coqui_LJ001-0007"))
    samples = np.concatenate([first, np.zeros(16000, np.float32), second, np.zeros(16000 * 25, np.float32)])
    regions = pipeline.speech_seconds(samples)
    options = DecodeOptions(language="en", temperature=(0.0,))
    said = tiny.transcribe(first, language="en", temperature=0.0, fp16=False)["segments"]
    repaired = guarded(tiny, samples, said, regions, options, "en")  # the second clip lies under no segment: a hole
    ((start, end),) = guard.holes(said, regions)
    whole = tiny.transcribe(samples, fp16=False, verbose=None, **{**options.whisper_kwargs(), "clip_timestamps": [start, end],
                                                                  "initial_prompt": "".join(s["text"] for s in said)})["segments"]
    new = repaired[len(said):]
    assert start > len(first) / 16000 - 1 and len(new) == len(whole) > 0 and "printed" in "".join(s["text"] for s in new)
    assert [s["text"] for s in new] == [s["text"] for s in whole]
    assert [s["seek"] for s in new] == [s["seek"] for s in whole]
    assert [t for s in new for t in (s["start"], s["end"])] == pytest.approx([t for s in whole for t in (s["start"], s["end"])], abs=0.02)
