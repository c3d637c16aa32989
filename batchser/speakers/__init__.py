"""Who speaks when: speaker turns from the files diarization and annotation tools write.

RTTM (pyannote, whisperX, NeMo), Praat TextGrid tiers and ELAN tiers are read
into :class:`Turns` records (:mod:`batchser.speakers.formats`), matched to a
job's recordings by name (:mod:`batchser.speakers.match`), and asked two
things: where the speaker changes (a speech segment is cut there) and who
speaks in each segment (:mod:`batchser.speakers.turns`). The job calls this
package; it never reaches back into the job.
"""

from batchser.speakers.formats import FORMATS, format_of, read_eaf, read_rttm, read_textgrid, read_turns_file
from batchser.speakers.match import InputTurns, SpeakerTurns, TurnsSource, job_turns
from batchser.speakers.turns import Turn, Turns, TurnsError, is_anonymous

__all__ = [
    "FORMATS",
    "InputTurns",
    "SpeakerTurns",
    "Turn",
    "Turns",
    "TurnsError",
    "TurnsSource",
    "format_of",
    "is_anonymous",
    "job_turns",
    "read_eaf",
    "read_rttm",
    "read_textgrid",
    "read_turns_file",
]
