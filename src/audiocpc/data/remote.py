"""Where a prepared corpus lives: a local folder (a path or a `file://` URL) or any fsspec URL
(`s3://bucket/corpus`, `gs://...`, `https://...`, `memory://...`). The one module that
imports fsspec, and only for URLs that are not local, so the core needs nothing new.

Local corpora are memory-mapped as before (a `file://` URL is just its path); any other URL
is read through fsspec: the manifest once, byte ranges of the shards for random access, and
whole shards front to back in streaming mode (data.streaming).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import IO, Any, Optional
from urllib.parse import unquote, urlparse

from audiocpc.errors import ConfigError

# 2+ letters (not C:\ on Windows); "::" chains fsspec protocols (simplecache::s3://bucket/x)
_URL = re.compile(r"^(?P<protocol>[A-Za-z][A-Za-z0-9+.-]+)(://|::)")
INSTALL_HINT = "pip install 'audiocpc[stream]'"


def url_protocol(text: str | Path) -> Optional[str]:
    """The protocol of a URL ('s3', 'file', ...), or None for a plain path."""
    if isinstance(text, Path):
        return None
    found = _URL.match(text)
    return found.group("protocol").lower() if found else None


def local_path(text: str | Path) -> Optional[Path]:
    """The local path of a plain path or a `file://` URL; None for any other URL."""
    protocol = url_protocol(text)
    if protocol is None:
        return Path(text)
    if protocol in ("file", "local"):
        parsed = urlparse(str(text))
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"--data: {text} names host '{parsed.netloc}'; a file:// URL is "
                              "file:///absolute/path (three slashes)")
        return Path(unquote(parsed.path))
    return None


def data_location(text: str | Path) -> Path | str:
    """A data argument as the rest of the code keeps it: a Path for anything local (file://
    URLs included), the URL itself (without a trailing slash) for anything else."""
    local = local_path(text)
    return local if local is not None else str(text).rstrip("/")


def is_remote(location: str | Path) -> bool:
    return local_path(location) is None


def _filesystem(url: str, setting: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) of `url`, or one line naming the setting and fix."""
    protocol = url_protocol(url)
    try:
        import fsspec.core
    except ImportError:
        raise ConfigError(f"{setting}: {url} is a {protocol}:// URL, which needs fsspec; "
                          f"install it ({INSTALL_HINT}) or give a local path") from None
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:  # the protocol's own package (s3fs, gcsfs, ...) is missing
        raise ConfigError(f"{setting}: {url}: {exc} (fsspec needs it for {protocol}://)") from None
    except ValueError as exc:
        raise ConfigError(f"{setting}: {url}: {exc}; give a local path, a file:// URL or a URL "
                          "of a protocol fsspec knows (s3://, gs://, https://, ...)") from None


class Location:
    """A folder, local or at a URL, and the few operations a prepared corpus needs of it."""

    def __init__(self, where: str | Path, setting: str = "--data"):
        self.setting = setting
        self.local = local_path(where)
        self.url = None if self.local is not None else str(where).rstrip("/")
        self._fs: Any = None
        self._root = ""
        if self.url is not None:
            self._fs, self._root = _filesystem(self.url, setting)

    def __str__(self) -> str:
        return str(self.local) if self.local is not None else str(self.url)

    def child(self, relative: str) -> str:
        """The URL (or path) of `relative` (posix) inside this folder, as messages show it."""
        if self.local is not None:
            return str(self.local / relative)
        return f"{self.url}/{relative}"

    def _inner(self, relative: str) -> str:
        return f"{self._root.rstrip('/')}/{relative}"

    def is_file(self, relative: str) -> bool:
        if self.local is not None:
            return (self.local / relative).is_file()
        try:
            return bool(self._fs.isfile(self._inner(relative)))
        except Exception as exc:  # each back end has its own (credentials, network, bucket)
            raise ConfigError(f"{self.setting}: {self.child(relative)} cannot be reached ({exc}); "
                              "check the URL and your credentials") from None

    def read_text(self, relative: str) -> str:
        if self.local is not None:
            return (self.local / relative).read_text(encoding="utf-8")
        return bytes(self._fs.cat_file(self._inner(relative))).decode("utf-8")

    def size(self, relative: str) -> int:
        """Bytes in `relative`; OSError when it is missing."""
        if self.local is not None:
            return (self.local / relative).stat().st_size
        try:
            return int(self._fs.size(self._inner(relative)))
        except FileNotFoundError:
            raise
        except Exception as exc:  # fsspec back ends raise their own types for a missing key
            raise OSError(str(exc)) from None

    def open(self, relative: str, block_size: int = 8 << 20) -> IO[bytes]:
        """`relative` opened for reading; remote files read ahead `block_size` bytes at a time
        (sequential reads, few requests)."""
        if self.local is not None:
            return open(self.local / relative, "rb", buffering=block_size)
        return self._fs.open(self._inner(relative), "rb", block_size=block_size,
                             cache_type="readahead")

    def read_range(self, relative: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of `relative`: one request for a remote file."""
        if self.local is not None:
            with open(self.local / relative, "rb") as handle:
                handle.seek(start)
                return handle.read(end - start)
        return bytes(self._fs.cat_file(self._inner(relative), start=start, end=end))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fs"] = None  # made again in each worker process (fsspec caches instances)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.url is not None:
            self._fs, self._root = _filesystem(self.url, self.setting)
