"""Atomic writes and stage markers: a failed write never replaces a good file."""

import pytest

from jepa_wm.io import UserError, atomic_path, is_done, mark_done, read_json, write_json


def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "x.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed mid-write")
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_done_marker_is_tied_to_the_config_hash(tmp_path):
    assert not is_done(tmp_path, "abc")
    mark_done(tmp_path, "abc", wall_time=1.5)
    assert is_done(tmp_path, "abc")
    assert not is_done(tmp_path, "abd")


def test_read_json_errors_name_the_file(tmp_path):
    bad = tmp_path / "meta.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="meta.json"):
        read_json(bad)
    with pytest.raises(UserError, match="missing.json: file not found"):
        read_json(tmp_path / "missing.json")


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os

    write_json(tmp_path / "r.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_new_memmap_reserves_its_blocks_before_anything_is_written(tmp_path):
    """An unreserved memory-mapped .npy is a sparse file: on a full disk the first page
    written into it kills the process with SIGBUS. new_memmap's file owns its blocks from
    the start (a full disk is then an OSError at creation), and is an ordinary .npy."""
    import os

    import numpy as np
    from numpy.lib.format import open_memmap

    from jepa_wm.io import new_memmap

    probe = tmp_path / "probe"
    with open(probe, "wb") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, 1 << 20)
        except OSError:
            pytest.skip("this file system cannot reserve blocks (posix_fallocate)")
    if probe.stat().st_blocks * 512 < 1 << 20:
        pytest.skip("this file system does not allocate reserved blocks")
    shape = (4096, 256)  # 4 MiB of float32
    sparse = open_memmap(tmp_path / "sparse.npy", mode="w+", dtype=np.float32, shape=shape)
    arr = new_memmap(tmp_path / "z.npy", np.float32, shape)
    size = (tmp_path / "z.npy").stat().st_size
    assert size > 4 * 4096 * 256
    assert (tmp_path / "sparse.npy").stat().st_blocks * 512 < size // 2  # holes, on this fs
    assert (tmp_path / "z.npy").stat().st_blocks * 512 >= size
    arr[:] = 1.5
    arr.flush()
    del arr, sparse
    assert np.load(tmp_path / "z.npy").shape == shape and np.load(tmp_path / "z.npy")[7, 3] == 1.5
