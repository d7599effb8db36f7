"""keras_mld.atomic, the one writer of every artefact: the destination is either the old
complete file / folder or the new complete one; failures leave nothing behind; without
``overwrite`` the rename itself refuses an existing destination (no check-then-replace)."""
import json
import os
import threading

import pytest

from keras_mld.atomic import atomic_path, save_model, write_json


def _listing(folder):
    return sorted(os.listdir(folder))


def test_file_is_renamed_into_place_and_keeps_its_suffix(tmp_path):
    target = tmp_path / "sub" / "report.json"
    with atomic_path(target) as tmp:
        assert tmp.endswith("report.json") and os.path.basename(tmp).startswith(".tmp-")
        assert not os.path.exists(tmp) and not target.exists()  # nothing visible yet
        with open(tmp, "w") as f:
            f.write("{}")
    assert _listing(tmp_path / "sub") == ["report.json"]


def test_existing_file_is_refused_without_overwrite_and_replaced_with_it(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_json(target, {"v": 2}, overwrite=False)
    assert json.loads(target.read_text()) == {"v": 1}
    assert _listing(tmp_path) == ["a.json"]  # the refused temporary file is gone
    write_json(target, {"v": 3})
    assert json.loads(target.read_text()) == {"v": 3}


def test_an_error_leaves_the_old_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target, overwrite=True) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"v": 1} and _listing(tmp_path) == ["a.json"]


def test_folder_replace_refuse_and_crash(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target, directory=True) as tmp:
        (open(os.path.join(tmp, "v1"), "w")).close()
    with pytest.raises(FileExistsError):
        with atomic_path(target, directory=True) as tmp:
            (open(os.path.join(tmp, "v2"), "w")).close()
    assert _listing(target) == ["v1"] and _listing(tmp_path) == ["model"]
    with pytest.raises(RuntimeError):
        with atomic_path(target, directory=True, overwrite=True) as tmp:
            (open(os.path.join(tmp, "v3"), "w")).close()
            raise RuntimeError("crash")
    assert _listing(target) == ["v1"] and _listing(tmp_path) == ["model"]
    with atomic_path(target, directory=True, overwrite=True) as tmp:
        (open(os.path.join(tmp, "v4"), "w")).close()
    assert _listing(target) == ["v4"] and _listing(tmp_path) == ["model"]


def test_a_file_in_the_way_of_a_folder_is_refused(tmp_path):
    (tmp_path / "model").write_text("x")
    with pytest.raises(FileExistsError):
        with atomic_path(tmp_path / "model", directory=True):
            pass
    assert (tmp_path / "model").read_text() == "x" and _listing(tmp_path) == ["model"]


def test_two_writers_without_overwrite_cannot_both_win(tmp_path):
    """Many threads write the same new file: exactly one succeeds, the others are refused by
    the link itself (a check-then-replace would let several "win" and lose data)."""
    target = tmp_path / "one.json"
    start, results = threading.Barrier(8), []

    def writer(i):
        start.wait()
        try:
            write_json(target, {"writer": i}, overwrite=False)
            results.append(i)
        except FileExistsError:
            pass

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 1
    assert json.loads(target.read_text()) == {"writer": results[0]}
    assert _listing(tmp_path) == ["one.json"]


def test_save_model_checks_the_extension(tmp_path):
    with pytest.raises(ValueError, match=r"\.keras or \.weights\.h5"):
        save_model(object(), tmp_path / "m.h5")
