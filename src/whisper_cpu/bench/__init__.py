"""The benchmark: timing harness, accuracy gates, peers, peak, result rows and the report. It imports the
library; the library never imports it. Importing it registers the peers beside our methods, and the entries of $WHISPER_CPU_PLUGINS' modules."""

from .. import registry
from . import peers  # noqa: F401  (registers faster-whisper and whisper.cpp)

registry.load_plugins()
