"""Never move past speech that was not decoded.

openai-whisper's seek loop moves on for good where a decode ends on a single timestamp, and keeps the
temperature-1.0 sample when every fallback failed: a decoder that ends early, loops on one word, or writes
three words over twenty seconds of speech skips that speech. fp32 rarely does; int8 products make it happen
now and then, as whole sentences lost on long recordings of hard speech. The voice activity detector knows
where speech is. Where speech lies under no trusted segment (none at all, one far sparser than speech ever
is, or one of a run of the same text), that stretch is transcribed again by the method itself, and the new
segments take the place of the suspect ones when they are trusted and say more.
"""

from collections.abc import Callable

SPARSE = 0.5  # words per second of speech under which a segment has skipped what it spans (people say 2-3)
MIN_SPEECH_S = 3.0  # less untrusted speech than this is left alone: segment timestamps are that loose
LOOP = 3  # the same text this many segments in a row: a decoding loop, not speech


def speech_s(regions: list[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in regions)


def _words(segment: dict) -> int:
    """Words with a letter or digit in them: a decode that writes ". . . ." over speech has written none."""
    return sum(any(c.isalnum() for c in word) for word in segment["text"].split())


def suspect(segments: list[dict], regions: list[tuple[float, float]]) -> list[bool]:
    """Per segment: too sparse for the speech it spans, or one of LOOP or more in a row with the same text."""
    texts = [" ".join(s["text"].lower().split()) for s in segments]
    looped = [False] * len(segments)
    run = 0
    for i in range(len(segments)):
        run = run + 1 if i and texts[i] == texts[i - 1] else 1
        if run >= LOOP:
            looped[i - run + 1 : i + 1] = [True] * run
    return [looped[i] or (sp >= MIN_SPEECH_S and _words(s) < SPARSE * sp)
            for i, s in enumerate(segments) for sp in [speech_s(regions, s["start"], s["end"])]]


def holes(segments: list[dict], regions: list[tuple[float, float]], flags: list[bool] | None = None) -> list[tuple[float, float]]:
    """(start, end) of the stretches of speech under no trusted segment, those with no trusted segment between them
    joined, each holding at least MIN_SPEECH_S of speech."""
    flags = suspect(segments, regions) if flags is None else flags
    trusted = sorted((s["start"], s["end"]) for s, bad in zip(segments, flags) if not bad)
    pieces = []
    for a, b in regions:
        for start, end in trusted:
            if end <= a or start >= b:
                continue
            if start > a:
                pieces.append((a, start))
            a = max(a, end)
            if a >= b:
                break
        if a < b:
            pieces.append((a, b))
    joined: list[tuple[float, float]] = []
    for a, b in sorted(pieces):
        if joined and not any(joined[-1][1] <= start < a for start, _ in trusted):
            joined[-1] = (joined[-1][0], max(joined[-1][1], b))
        else:
            joined.append((a, b))
    return [(a, b) for a, b in joined if speech_s(regions, a, b) >= MIN_SPEECH_S]


def possible(segments: list[dict], duration_s: float) -> bool:
    """Whether any hole can exist, judged without the detector (speech never outlasts time): a sparse or looping
    segment, or MIN_SPEECH_S without one. Most transcripts are cleared here, at no cost."""
    edges = [0.0, *(t for s in segments for t in (s["start"], s["end"])), duration_s]
    gaps = any(b - a >= MIN_SPEECH_S for a, b in zip(edges[::2], edges[1::2]))
    return gaps or any(suspect(segments, [(0.0, duration_s)]))


def text_of(segments: list[dict]) -> str:
    return "".join(s["text"] for s in segments).strip()


def repair(segments: list[dict], regions: list[tuple[float, float]],
           transcribe: Callable[[float, float, str], list[dict]]) -> tuple[list[dict], int]:
    """(segments, stretches replaced): each hole transcribed again by `transcribe(start, end, text before)`; its
    segments replace the suspect ones over it where they are trusted and hold more words."""
    flags = suspect(segments, regions)
    replaced = 0
    for a, b in holes(segments, regions, flags):
        new = [s for s in transcribe(a, b, "".join(s["text"] for s in segments if s["end"] <= a)) if s["end"] > a and s["start"] < b]
        new = [s for s, bad in zip(new, suspect(new, regions)) if not bad]
        old = [i for i, (s, bad) in enumerate(zip(segments, flags)) if bad and s["end"] > a and s["start"] < b]
        keep = [(s, bad) for i, (s, bad) in enumerate(zip(segments, flags)) if i not in old]
        new = _between([s for s, _ in keep], new)
        if sum(map(_words, new)) <= sum(_words(segments[i]) for i in old):
            continue
        merged = sorted(keep + [(s, False) for s in new], key=lambda item: item[0]["start"])
        segments, flags = [s for s, _ in merged], [bad for _, bad in merged]
        replaced += 1
    return [s | {"id": i} for i, s in enumerate(segments)], replaced


def _between(kept: list[dict], new: list[dict]) -> list[dict]:
    """The new segments cut to the time the kept ones leave free, their words with them: a stretch decoded alone can
    time its last words past the stretch, over a kept segment (seen on spontaneous speech: 1.04-8.70 s over one
    kept from 7.70 s). One that lies wholly under a kept segment repeats its words and is left out."""
    inside = []
    for s in new:
        start = max([s["start"], *(k["end"] for k in kept if k["start"] <= s["start"])])
        end = min([s["end"], *(k["start"] for k in kept if k["start"] > s["start"])])
        if start >= end:
            continue
        words = [w | {"start": min(max(w["start"], start), end), "end": min(max(w["end"], start), end)} for w in s.get("words", [])]
        inside.append(s | {"start": start, "end": end} | ({"words": words} if "words" in s else {}))
    return inside
