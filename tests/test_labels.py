from __future__ import annotations

from pathlib import Path

import pytest

from batchser.labels import Label, label_source, parse_ravdess


def test_ravdess_name_fields() -> None:
    r = parse_ravdess("Actor_12/03-01-05-02-01-02-12.flac")
    assert (r.modality, r.vocal_channel, r.emotion, r.intensity) == ("03", "01", "angry", "strong")
    assert (r.statement, r.repetition, r.actor, r.sex) == (1, 2, 12, "female")
    assert parse_ravdess("03-01-01-01-02-01-01.wav").emotion == "neutral"


@pytest.mark.parametrize("name", ["03-01-09-01-01-01-01.wav", "03-01-05-03-01-01-01.wav", "speech.wav", "03-01-05.wav"])
def test_ravdess_rejects_other_names(name: str) -> None:
    with pytest.raises(ValueError, match="not a RAVDESS name"):
        parse_ravdess(name)


def test_ravdess_source_gives_speaker_groups() -> None:
    src = label_source("ravdess", resolve=Path)
    assert src(Path("/x/03-01-04-01-01-01-07.flac")) == Label("sad", "actor07")
    assert src(Path("/x/other.flac")) == Label()


def test_csv_source(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("path,label,speaker\nsub/a.wav,happy,s1\n/abs/b.wav,sad,\n")
    src = label_source("csv:l.csv", resolve=lambda p: tmp_path / p)
    assert src(tmp_path / "sub" / "a.wav") == Label("happy", "s1")
    assert src(Path("/abs/b.wav")) == Label("sad", None)
    assert src(tmp_path / "unlisted.wav") == Label()


def test_csv_without_label_column(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("file,emotion\na.wav,happy\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \[.path., .label.\]; it has \[.file., .emotion.\]"):
        label_source("csv:l.csv", resolve=lambda p: tmp_path / p)
