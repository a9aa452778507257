"""Reading the text files a user hands cpdm (CSV sheets, protocols): one clear message per way it fails."""

from __future__ import annotations

from pathlib import Path

from cpdm.errors import CpdmError


def read_user_text(path: Path, shown, error: type[CpdmError] = CpdmError, *, missing: str = "no such file") -> str:
    """The UTF-8 text of ``path`` (a leading BOM dropped); each failure is ``error`` naming ``shown``.

    ``shown`` is how the user knows the file (the path they typed, or its
    place inside a dataset); ``missing`` is what is said when it is absent.
    """
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise error(f"{shown}: {missing}") from None
    except IsADirectoryError:
        raise error(f"{shown}: is a folder, not a file") from None
    except UnicodeDecodeError as exc:
        raise error(f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(f"{shown}: cannot read ({exc.strerror or exc})") from None
