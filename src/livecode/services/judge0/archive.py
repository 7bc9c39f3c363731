"""Judge0's `additional_files`: a base64-encoded zip whose files sit beside the source in the
working directory. They become the files of a multi-file program (services/programs.py: the same
path rules and limits), the submission's source being the entry at the language's default path.
The zip is read with bounds (entries, declared and actual sizes), so a zip bomb costs nothing."""

from __future__ import annotations

import io
import lzma
import zipfile
import zlib

from ...config import Settings
from ..validation import lenient_b64decode


class ArchiveError(ValueError):
    """Why the archive cannot be used (Judge0's 422 on `additional_files`)."""


def unzip(encoded: str, settings: Settings) -> list[tuple[str, str]]:
    """The (path, text) files of a base64 zip, in the archive's order; directories are skipped."""
    try:
        data = lenient_b64decode(encoded)
    except ValueError:
        raise ArchiveError("is not valid base64") from None
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise ArchiveError("is not a zip archive") from None
    budget = settings.max_files_bytes
    if len(infos) >= settings.max_files:  # the source is one more file
        raise ArchiveError(
            f"holds {len(infos)} files; a program may have at most {settings.max_files - 1} besides the source"
        )
    files = []
    for info in infos:
        if info.file_size > budget:
            raise ArchiveError(f"the files take more than {settings.max_files_bytes} bytes together")
        try:
            with archive.open(info) as member:
                raw = member.read(budget + 1)
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, OSError, EOFError,
                zlib.error, lzma.LZMAError) as exc:  # corrupt compressed data too
            raise ArchiveError(f"file {info.filename[:200]!r} cannot be extracted: {exc}") from None
        if len(raw) > budget:
            raise ArchiveError(f"the files take more than {settings.max_files_bytes} bytes together")
        budget -= len(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ArchiveError(
                f"file {info.filename[:200]!r} is not UTF-8 text (LiveCode runs programs of text files)"
            ) from None
        files.append((info.filename, text))
    return files
