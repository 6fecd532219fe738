"""Content-addressed files on the local disk: atomic, race-safe writes."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets

from django.core.files import File
from django.core.files.storage import FileSystemStorage

from .base import ContentAddressedStorageMixin


class ContentAddressedFileSystemStorage(ContentAddressedStorageMixin, FileSystemStorage):
    """Content-addressed local storage with atomic, race-safe writes.

    Bytes go to a temporary file in the target directory, which is then hard-linked into
    place: readers never see a partial file, and when two writers store the same key at
    once the first link wins and the other simply drops its temporary file.
    """

    def put_if_absent(self, name: str, content: File[bytes]) -> bool:
        full_path = self.path(name)
        if os.path.exists(full_path):
            return False
        tmp_path = self._write_temporary(full_path, content)
        try:
            try:
                os.link(tmp_path, full_path)
            except FileExistsError:
                return False  # someone stored the same bytes first: keep theirs
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                    raise
                os.replace(tmp_path, full_path)  # no hard links here: same bytes, atomic
            # a private helper of FileSystemStorage that django-stubs leaves out
            self._ensure_location_group_id(full_path)  # type: ignore[attr-defined]
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)

    def replace(self, name: str, content: File[bytes]) -> None:
        """Atomically put ``content`` in place of whatever ``name`` holds (a repair)."""
        full_path = self.path(name)
        tmp_path = self._write_temporary(full_path, content)
        try:
            os.replace(tmp_path, full_path)
            self._ensure_location_group_id(full_path)  # type: ignore[attr-defined]  # as above
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)

    def _write_temporary(self, full_path: str, content: File[bytes]) -> str:
        """``content`` in a new temporary file beside ``full_path``, synced; its path."""
        directory = os.path.dirname(full_path)
        self._make_directories(directory)
        tmp_path = os.path.join(directory, f".tmp-{secrets.token_hex(8)}.part")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp_path, flags, 0o666)  # the umask applies, as in FileSystemStorage
        try:
            with os.fdopen(fd, "wb") as tmp:
                for chunk in content.chunks():
                    tmp.write(chunk if isinstance(chunk, bytes) else chunk.encode())
                tmp.flush()
                os.fsync(tmp.fileno())
            if self.file_permissions_mode is not None:
                os.chmod(tmp_path, self.file_permissions_mode)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            raise
        return tmp_path

    def _make_directories(self, directory: str) -> None:
        mode = self.directory_permissions_mode
        missing = []
        path = directory
        while path and not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise FileExistsError(f"{path} exists and is not a directory.") from None
                continue
            if mode is not None:
                os.chmod(path, mode)
