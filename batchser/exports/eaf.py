"""ELAN files (through ``pympi-ling``): the same tiers as the TextGrid, linked to the recording.

- ``emotion``: a time-aligned tier, an annotation per labelled interval (times
  in milliseconds, ELAN's unit);
- ``confidence``: a child of ``emotion`` (symbolic association), so a
  confidence moves with its annotation when someone edits the times in ELAN;
- ``speaker``: a time-aligned tier of names, where speaker turns named anyone;
- ``arousal``, ``valence``: children of ``emotion`` as ``confidence`` is, the
  probability of the high and the positive side, when the model has them.

Stretches without speech are no annotation (ELAN tiers need not cover the
file). Overlapping windows go to further tiers (``emotion 2`` …).

The media link holds both paths ELAN knows: ``MEDIA_URL``, the recording's
absolute ``file:`` URL, and ``RELATIVE_MEDIA_URL``, the way from the ``.eaf``'s
folder to it. ELAN tries the absolute one first, then the relative one, so
the link holds when the reports are moved alone on the same machine
(absolute) and when the recordings and the reports are copied together, to
another disk or machine (relative). An archive member has no file of its
own: its ``.eaf`` links nothing, and ELAN asks for the media when opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from batchser.exports.recording import Exporter, Recording, tier_name

__all__ = ["EAF", "media_type", "write_eaf"]

_CONFIDENCE_TYPE = "confidence"
# ELAN's own names for the media it plays (others: "audio/*", which it opens by content).
_MIME = {".wav": "audio/x-wav", ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
         ".mpg": "video/mpeg", ".mpeg": "video/mpeg"}  # fmt: skip


def media_type(path: Path) -> str:
    """The MIME type ELAN expects for a media file, from its extension."""
    return _MIME.get(path.suffix.lower(), "audio/*")


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _relative_url(media: Path, final: Path) -> str:
    rel = os.path.relpath(media, final.parent)
    url = quote(os.fsencode(rel).replace(os.sep.encode(), b"/"))
    return url if url.startswith("../") else f"./{url}"


def write_eaf(rec: Recording, target: Path, final: Path) -> None:
    """Write ``rec`` as an ELAN file to ``target``; ``final`` (where it will be) anchors the relative link."""
    from pympi import Elan

    eaf = Elan.Eaf(author="batchser")
    eaf.remove_tier("default")
    eaf.add_linguistic_type(_CONFIDENCE_TYPE, constraints="Symbolic_Association", timealignable=False)
    if rec.media is not None:
        eaf.add_linked_file(rec.media.as_uri(), relpath=_relative_url(rec.media, final), mimetype=media_type(rec.media))
    for k, lane in enumerate(rec.lanes()):
        emotion, confidence, speaker = (tier_name(kind, k) for kind in ("emotion", "confidence", "speaker"))
        eaf.add_tier(emotion)
        eaf.add_tier(confidence, ling=_CONFIDENCE_TYPE, parent=emotion)
        if rec.has_speakers:
            eaf.add_tier(speaker)
        dims = {d: tier_name(d, k) for d in rec.dimension_names}  # like confidence: values of each emotion annotation
        for tier in dims.values():
            eaf.add_tier(tier, ling=_CONFIDENCE_TYPE, parent=emotion)
        aligned = eaf.tiers[emotion][0]
        for iv in lane:
            start, end = _ms(iv.start_s), _ms(iv.end_s)
            eaf.add_annotation(emotion, start, end, iv.label)
            parent = next(reversed(aligned))  # the annotation just added (tiers keep insertion order)
            # A reference annotation in pympi's documented layout (id -> (parent, value, previous, svg)):
            # its add_ref_annotation looks the parent up by time, a pass over the tier for each one.
            for tier, value in [(confidence, iv.confidence), *((dims[d], v) for d, v in iv.dimensions if d in dims)]:
                ref = eaf.generate_annotation_id()
                eaf.annotations[ref] = tier
                eaf.tiers[tier][1][ref] = (parent, value, None, None)
            if iv.speaker:
                eaf.add_annotation(speaker, start, end, iv.speaker)
    # ELAN numbers new annotations after lastUsedAnnotationId; pympi writes a property of another name.
    eaf.properties = [(k, v) for k, v in eaf.properties if k != "lastUsedAnnotation"]
    eaf.add_property("lastUsedAnnotationId", str(eaf.maxaid))
    Elan.to_eaf(os.fspath(target), eaf)


EAF = Exporter(name="eaf", suffix=".eaf", what="ELAN file", write=write_eaf)
