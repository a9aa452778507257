import pytest

from cpdm.errors import CpdmError
from cpdm.user_files import read_user_text


def test_reads_utf8_and_drops_a_bom(tmp_path):
    path = tmp_path / "sheet.csv"
    path.write_bytes("\ufefffile,artist\nä.png,Dürer\n".encode("utf-8"))
    assert read_user_text(path, "sheet.csv") == "file,artist\nä.png,Dürer\n"


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "shown.csv: no such file"),
    (lambda p: p.mkdir(), "shown.csv: is a folder, not a file"),
    (lambda p: p.write_bytes(b"caf\xe9"), r"shown.csv: not UTF-8 text \(unexpected end of data at byte 3\)"),
])
def test_each_failure_is_one_line_naming_the_file_as_shown(tmp_path, make, message):
    path = tmp_path / "real-name.csv"
    make(path)
    with pytest.raises(CpdmError, match=f"^{message}$"):
        read_user_text(path, "shown.csv")


def test_the_caller_chooses_the_error_type_and_the_missing_word(tmp_path):
    class SheetError(CpdmError):
        pass

    with pytest.raises(SheetError, match="^x.csv: missing$"):
        read_user_text(tmp_path / "absent.csv", "x.csv", SheetError, missing="missing")
