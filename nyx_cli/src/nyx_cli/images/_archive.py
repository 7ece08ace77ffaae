"""Image archives (an OCI image layout or a ``docker save`` archive, a directory or a
tar file) read member by member, and their JSON documents read under a cap."""

from __future__ import annotations

import json
import os
import stat
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

from ..errors import ImageLimitError, InvalidImageError
from ._model import ImageLimits
from ._unpack import _NAME_MAX, _BadTarHeader, _clean, _TarInfo

__all__: list[str] = []

_ARCHIVE_MEMBERS = 100_000  # members of a docker save / OCI layout tar


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidImageError(f"{what} is not valid JSON: {str(exc)[:200]}") from exc


class _Source:
    """Files of an image archive: a directory or a tar file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if path.is_dir():
            return
        if not path.is_file():
            raise InvalidImageError(f"image archive {str(path)!r} does not exist")
        try:
            self._tar = tarfile.open(path, "r:*", tarinfo=_TarInfo)  # noqa: SIM115 (close())
            while (info := self._tar.next()) is not None:
                if len(self._members) >= _ARCHIVE_MEMBERS:
                    raise InvalidImageError(
                        f"{str(path)!r} has more than {_ARCHIVE_MEMBERS} members"
                    )
                if len(info.name) > _NAME_MAX or len(info.linkname) > _NAME_MAX:
                    raise InvalidImageError(f"{str(path)!r}: a member name is too long")
                info.pax_headers = {}  # not needed here; could be 1 MiB per member
                self._members[_clean(info.name) or "."] = info
        except (tarfile.TarError, OSError, EOFError, RecursionError, _BadTarHeader) as exc:
            self.close()
            raise InvalidImageError(f"{str(path)!r} is not a readable tar archive: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def exists(self, name: str) -> bool:
        name = _clean(name) or "."
        if self._tar is None:
            return (self.path / name).is_file()
        info = self._members.get(name)
        return info is not None and (info.isreg() or info.islnk() or info.issym())

    def open(self, name: str) -> BinaryIO:
        clean = _clean(name)
        if clean is None or not self.exists(clean):
            raise InvalidImageError(f"{str(self.path)!r}: missing {name!r}")
        if self._tar is None:
            target = (self.path / clean).resolve()
            if not target.is_relative_to(self.path.resolve()):
                raise InvalidImageError(f"{str(self.path)!r}: {name!r} points outside the archive")
            try:  # O_NONBLOCK: a FIFO swapped in after exists() must not block the open
                fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise InvalidImageError(f"{str(self.path)!r}: {name!r}: {exc.strerror}") from exc
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise InvalidImageError(f"{str(self.path)!r}: {name!r} is not a regular file")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        info = self._members[clean]
        for _ in range(16):
            if info.issym():
                link = _clean(f"{PurePosixPath(clean).parent}/{info.linkname}")
            elif info.islnk():
                link = _clean(info.linkname)
            else:
                break
            if link is None or link not in self._members:
                raise InvalidImageError(f"{str(self.path)!r}: {name!r} is a dangling link")
            clean, info = link, self._members[link]
        f = self._tar.extractfile(info)
        if f is None:
            raise InvalidImageError(f"{str(self.path)!r}: {name!r} is not a file")
        return cast(BinaryIO, f)

    def read(self, name: str, limit: int) -> bytes:
        with self.open(name) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ImageLimitError(
                f"{str(self.path)!r}: {name!r} is larger than "
                + ImageLimits.describe("image_config_max_bytes", limit)
            )
        return data

    def json(self, name: str, limit: int) -> Any:
        return _json(self.read(name, limit), f"{str(self.path)!r}: {name!r}")
