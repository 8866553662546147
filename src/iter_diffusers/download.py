"""Resumable, atomic download of one file over HTTP(S), with a progress bar.

The bytes go to ``<destination>.incomplete``; a later call resumes that file with an HTTP ``Range`` request, and
only a complete file is renamed to ``<destination>``, so a cut-off download never leaves a short file under the
real name. A host that cannot be reached (:class:`HostUnreachableError`), a connection cut before the announced
size (:class:`DownloadCutOffError`), an HTTP error or an HTML page where a file was expected raises a
:class:`DownloadError` with a one-line message.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import requests
from tqdm.auto import tqdm

PARTIAL_SUFFIX = ".incomplete"
CHUNK_SIZE = 1 << 16  # what a cut connection can lose of the last piece


class DownloadError(OSError):
    """A download failed or did not deliver the expected file."""


class HostUnreachableError(DownloadError):
    """No answer from the server: no network, a name that does not resolve, a refused connection, a timeout."""


class DownloadCutOffError(DownloadError):
    """The connection ended before the whole file arrived; what arrived is kept for the next call to resume."""


def _one_line(error: object, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception under requests' and urllib3's wrappers (``args[0]``, ``.reason``, ``__cause__``),
    e.g. the ``socket.gaierror`` of a name that does not resolve."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "reason", None)
        if not isinstance(inner, BaseException):
            inner = error.__cause__ or next((arg for arg in error.args if isinstance(arg, BaseException)), None)
        if inner is None:
            break
        error = inner
    return error


def _unreachable(url: str, error: requests.RequestException, timeout: float) -> DownloadError:
    """The error for a request that got no response: which host, and why in the system's words."""
    host = urlsplit(url).netloc
    if isinstance(error, requests.Timeout):
        return HostUnreachableError(f"could not reach {host}: no answer within {timeout:g} s")
    if not isinstance(error, requests.ConnectionError):  # an invalid URL, too many redirects, ...
        return DownloadError(f"{url}: {_one_line(error)}")
    cause = _root_cause(error)
    reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else _one_line(cause)
    return HostUnreachableError(f"could not reach {host} ({reason})")


def _total_size(response: requests.Response) -> int | None:
    """The full size of the file, from ``Content-Range`` (a resumed download) or ``Content-Length``."""
    if response.status_code == 206:
        total = response.headers.get("Content-Range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else None


def _check_response(response: requests.Response, url: str, offset: int) -> None:
    if response.status_code >= 400:
        raise DownloadError(f"{url}: HTTP {response.status_code} {response.reason or ''}".rstrip())
    if "text/html" in response.headers.get("Content-Type", ""):
        raise DownloadError(f"{url}: the server sent an HTML page, not the file (wrong URL, or a login/error page)")
    if response.status_code == 206 and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
        raise DownloadError(f"{url}: the server resumed at the wrong offset ({response.headers.get('Content-Range')})")


def download_file(url: str, destination: str | Path, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``destination``, resuming an earlier partial download of it.

    Args:
        url (`str`):
            The file's HTTP(S) address; redirects are followed.
        destination (`str` or `Path`):
            Where the file goes. It appears only once complete (renamed from ``<destination>.incomplete``).
        progress (`bool`, defaults to `True`):
            Show a tqdm progress bar on stderr.
        timeout (`float`, defaults to 60):
            Seconds to wait for the connection and between two pieces of data.

    Returns:
        `Path`: ``destination``.

    Raises:
        HostUnreachableError: no response (no network, unknown host, refused connection, timeout).
        DownloadCutOffError: the response ended before the announced size; what arrived is kept in the partial
            file for the next call to resume.
        DownloadError: an HTTP error or an HTML page (never kept). Every message is one line.
    """
    destination = Path(destination)
    partial = destination.with_name(destination.name + PARTIAL_SUFFIX)
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Accept-Encoding": "identity"}  # byte counts and ranges refer to the file itself
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = requests.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as error:  # no response at all
        raise _unreachable(url, error, timeout) from None
    with response:
        if response.status_code == 416:  # the partial file is as long as the file or longer: start again
            partial.unlink()
            return download_file(url, destination, progress=progress, timeout=timeout)
        _check_response(response, url, offset)
        total = _total_size(response)
        try:
            _receive(response, partial, response.status_code == 206, total, url, progress)
            broken = False
        except requests.RequestException:  # the connection broke or stalled mid-file
            broken = True
    size = partial.stat().st_size if partial.exists() else 0
    if total is not None and size > total:  # not a prefix of the file: useless for resuming
        partial.unlink()
        raise DownloadError(f"{url}: the server sent {size} bytes where it announced {total}; run again")
    if broken or (total is not None and size < total):
        of_total = f" of {total}" if total is not None else ""
        raise DownloadCutOffError(f"download of {destination.name} from {urlsplit(url).netloc} was cut off after "
                                  f"{size}{of_total} bytes; run again to resume (they are kept in {partial})")
    os.replace(partial, destination)
    return destination


def _receive(response, partial: Path, resumed: bool, total: int | None, url: str, progress: bool) -> None:
    """Append (``resumed``) or write the response body to ``partial``; an HTML body is refused and deleted."""
    name = partial.name[: -len(PARTIAL_SUFFIX)]
    style = dict(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress)
    with open(partial, "ab" if resumed else "wb") as handle, tqdm(initial=handle.tell(), **style) as bar:
        for chunk in response.iter_content(CHUNK_SIZE):
            if handle.tell() == 0 and chunk.lstrip()[:1] == b"<":
                handle.close()
                partial.unlink()
                raise DownloadError(f"{url}: the server sent an HTML/XML page, not the file")
            handle.write(chunk)
            bar.update(len(chunk))
        handle.flush()
        os.fsync(handle.fileno())
