"""Registry entries for the benchmark's own tests, loaded through $WHISPER_CPU_PLUGINS so that the benchmark's child
processes see them too: one that decodes nothing (every stage's hand-off at no cost), one that aborts, and fp32 under
another name (all that a new method of ours needs is its entry)."""

import os

from whisper_cpu.registry import BATCHED, LONGFORM, Entry, System, register, torch_method
from whisper_cpu.runner import Runner, Transcript

TEST = System("test-plugin", "tab:gray")


class Instant(Runner):
    multilingual, weights, batch_size = False, [], 1

    def transcribe(self, source, options, progress=False) -> Transcript:
        return Transcript("", [], options.language or "en", fallbacks=0)

    def split_times(self, samples, options, forced=None) -> tuple[float, float, int]:
        return 0.001, 0.001, forced or 1


class Aborts(Instant):
    def transcribe(self, source, options, progress=False) -> Transcript:
        os.abort()


register(Entry("instant", TEST, "decodes nothing, at once", lambda model, threads: Instant()))
register(Entry("instant-batched", TEST, "decodes nothing, at once, batched", lambda model, threads: Instant(), tags=frozenset({BATCHED})))
register(Entry("aborts", TEST, "aborts the process when asked to transcribe", lambda model, threads: Aborts()))
register(torch_method("throwaway", "fp32 under another name", lambda model: model, tags=frozenset({LONGFORM})))
