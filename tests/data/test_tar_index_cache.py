"""The tar index of WebDataset shards is saved beside them and reused: a second run walks no tar header and gives the
same index and items; a touched, replaced or added shard is walked again (only that one); a truncated or
inconsistent entry is rebuilt; a read-only shard folder keeps its entries in the cache folder; processes that wait
on the build lock load what the first one built."""

import contextlib
import os
import tarfile

import numpy as np
import pytest
import torch
from image_records_data import add_member, encoded_images, write_shards

from modelforge.core.errors import DataError
from modelforge.data.formats import tar_index, tar_index_cache
from modelforge.data.formats.image_records import index_image_records
from modelforge.data.formats.tar_index import index_tar_images


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELFORGE_CACHE", str(tmp_path / "cache"))


def _walks(monkeypatch) -> list[str]:
    """The names of the shards whose headers get walked from now on."""
    walked, real = [], tar_index.index_shard

    def counting(shard, *args):
        walked.append(shard.name)
        return real(shard, *args)

    monkeypatch.setattr(tar_index, "index_shard", counting)
    return walked


def _no_tar_reading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a tar header was read")

    monkeypatch.setattr(tarfile, "open", refuse)
    monkeypatch.setattr(tar_index, "_samples", refuse)


def _assert_same(a, b):
    for field in ("shard", "offset", "size", "names"):
        assert getattr(a, field).dtype == getattr(b, field).dtype and np.array_equal(getattr(a, field),
                                                                                      getattr(b, field)), field
    assert (a.labels, a.skipped, a.image_column, a.label_column) == (b.labels, b.skipped, b.image_column,
                                                                    b.label_column)


def _entries(folder):
    return sorted(p.name for p in folder.glob("tar-index-*.npz"))


def test_a_second_indexing_reads_no_tar_header_and_gives_the_same_index_and_items(tmp_path, monkeypatch):
    shards = write_shards(tmp_path / "shards", encoded_images(18), count=3)
    paths = sorted(shards.glob("*.tar"))
    first = index_tar_images(paths)
    records = index_image_records(str(shards), "webdataset")
    dataset = records.make(*records.parts["train"], 3, 9)
    items = [dataset[i] for i in range(len(dataset))]
    assert len(_entries(shards / ".modelforge-tokens")) == 3  # one per shard, beside the shards

    _no_tar_reading(monkeypatch)
    again = index_tar_images(paths)
    _assert_same(first, again)
    records = index_image_records(str(shards), "webdataset")
    dataset = records.make(*records.parts["train"], 3, 9)
    assert len(dataset) == len(items) == 18
    for i, (x, y) in enumerate(items):
        assert torch.equal(dataset[i][0], x) and int(dataset[i][1]) == int(y)
    with pytest.raises(AssertionError, match="tar header"):  # other selection rules are another entry
        index_tar_images(paths, label_column="txt")


def test_a_touched_replaced_or_added_shard_is_walked_again_alone(tmp_path, monkeypatch):
    shards = write_shards(tmp_path / "shards", encoded_images(18), count=3)
    index_tar_images(sorted(shards.glob("*.tar")))
    walked = _walks(monkeypatch)
    stat = (shards / "shard-001.tar").stat()
    os.utime(shards / "shard-001.tar", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    index_tar_images(sorted(shards.glob("*.tar")))
    assert walked == ["shard-001.tar"]
    assert len(_entries(shards / ".modelforge-tokens")) == 3  # the touched shard's old entry is gone

    walked.clear()
    write_shards(tmp_path / "other", encoded_images(4, seed=1), count=1)
    os.replace(tmp_path / "other" / "shard-000.tar", shards / "shard-000.tar")  # now 4 samples, other bytes
    write_shards(tmp_path / "more", encoded_images(2, seed=2), count=1, prefix="extra")
    os.replace(tmp_path / "more" / "extra-000.tar", shards / "shard-003.tar")
    index = index_tar_images(sorted(shards.glob("*.tar")))
    assert walked == ["shard-000.tar", "shard-003.tar"]
    fresh = tar_index.index_shard(shards / "shard-000.tar", None, None, "skip")
    assert np.array_equal(index.offset[index.shard == 0], fresh.offset) and len(fresh.labels) == 4
    assert np.bincount(index.shard).tolist() == [4, 6, 6, 2]


@pytest.mark.parametrize("damage", ["truncated arrays", "short arrays", "truncated sidecar"])
def test_a_damaged_entry_is_rebuilt_not_trusted(tmp_path, monkeypatch, damage):
    shards = write_shards(tmp_path / "shards", encoded_images(12), count=2)
    paths = sorted(shards.glob("*.tar"))
    first = index_tar_images(paths)
    folder = shards / ".modelforge-tokens"
    entry = folder / _entries(folder)[0]
    if damage == "truncated arrays":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "short arrays":  # a well-formed file whose arrays disagree with the sidecar's count
        with np.load(entry) as data:
            arrays = {name: data[name] for name in data.files}
        np.savez(entry, **{**arrays, "offset": arrays["offset"][:-1]})
    else:
        sidecar = entry.with_suffix(".json")
        sidecar.write_text(sidecar.read_text()[:20])
    walked = _walks(monkeypatch)
    _assert_same(first, index_tar_images(paths))
    assert len(walked) == 1
    walked.clear()
    index_tar_images(paths)
    assert walked == []  # and the rebuilt entry is good


def test_a_read_only_shard_folder_keeps_its_index_in_the_cache_folder(tmp_path, monkeypatch):
    shards = write_shards(tmp_path / "shards", encoded_images(8), count=2)
    if os.geteuid() == 0:  # root writes through chmod: make the shard folder read-only in the writable check
        real = os.access
        monkeypatch.setattr("modelforge.data.token_file.os.access",
                            lambda path, mode: not str(path).startswith(str(shards)) and real(path, mode))
    shards.chmod(0o555)
    try:
        first = index_tar_images(sorted(shards.glob("*.tar")))
        assert len(_entries(tmp_path / "cache" / "tar_index")) == 2
        assert _entries(shards / ".modelforge-tokens") == []  # absent, or left empty by root's mkdir
        _no_tar_reading(monkeypatch)
        _assert_same(first, index_tar_images(sorted(shards.glob("*.tar"))))
    finally:
        shards.chmod(0o755)


def test_a_saved_index_with_skipped_samples_fails_like_a_walk_under_on_error_fail(tmp_path, monkeypatch):
    shards = write_shards(tmp_path / "shards", encoded_images(6), count=1)
    with tarfile.open(shards / "shard-000.tar", "a") as tar:
        add_member(tar, "bad.png", b"\x89PNG\r\n\x1a\nnot really")
        add_member(tar, "bad.cls", b"dark")
    with pytest.raises(DataError) as walking:
        index_tar_images([shards / "shard-000.tar"], on_error="fail")
    assert _entries(shards / ".modelforge-tokens") == []  # a failed walk saves nothing
    assert len(index_tar_images([shards / "shard-000.tar"]).skipped) == 1
    _no_tar_reading(monkeypatch)
    with pytest.raises(DataError) as saved:
        index_tar_images([shards / "shard-000.tar"], on_error="fail")
    assert str(saved.value) == str(walking.value) and "bad.png: not a readable image" in str(saved.value)


def test_a_process_that_waited_on_the_build_lock_loads_the_entry_built_meanwhile(tmp_path, monkeypatch):
    shards = write_shards(tmp_path / "shards", encoded_images(6), count=1)
    shard = shards / "shard-000.tar"
    built = tar_index.index_shard(shard, None, None, "skip")
    real_lock = tar_index_cache.build_lock

    @contextlib.contextmanager
    def another_rank_builds_first(path):
        with real_lock(path):
            tar_index_cache.save_entry(path, shard, built)  # what the rank holding the lock wrote
            yield

    monkeypatch.setattr(tar_index_cache, "build_lock", another_rank_builds_first)
    walked = _walks(monkeypatch)
    index = index_tar_images([shard])
    assert walked == [] and np.array_equal(index.offset, built.offset) and index.labels == built.labels


def _index_in_a_process(paths, out):
    np.save(out, index_tar_images(paths).offset)


def test_processes_started_together_walk_each_shard_once(tmp_path, monkeypatch):
    import multiprocessing
    import time

    shards = write_shards(tmp_path / "shards", encoded_images(8), count=2)
    paths, log, real = sorted(shards.glob("*.tar")), tmp_path / "walks.log", tar_index.index_shard

    def slow_logged_walk(shard, *args):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {shard.name}\n")
        time.sleep(0.3)  # the other process reaches the lock meanwhile
        return real(shard, *args)

    monkeypatch.setattr(tar_index, "index_shard", slow_logged_walk)
    context = multiprocessing.get_context("fork")  # like torchrun's ranks: started together, same files
    processes = [context.Process(target=_index_in_a_process, args=(paths, tmp_path / f"{i}.npy")) for i in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [process.exitcode for process in processes] == [0, 0, 0]
    assert sorted(line.split()[1] for line in log.read_text().splitlines()) == ["shard-000.tar", "shard-001.tar"]
    offsets = [np.load(tmp_path / f"{i}.npy") for i in range(3)]
    assert all(np.array_equal(offsets[0], o) for o in offsets[1:]) and len(offsets[0]) == 8


def test_saved_skip_messages_name_the_shard_as_this_run_does(tmp_path, monkeypatch):
    shards = write_shards(tmp_path / "shards", encoded_images(4), count=1)
    with tarfile.open(shards / "shard-000.tar", "a") as tar:
        add_member(tar, "lost.cls", b"dark")  # a label without an image
    absolute = index_tar_images([shards / "shard-000.tar"])
    assert absolute.skipped[0][1].startswith(f"{shards / 'shard-000.tar'}: lost: no image member")
    monkeypatch.chdir(tmp_path)
    _no_tar_reading(monkeypatch)
    (where, message), = index_tar_images([shards.relative_to(tmp_path) / "shard-000.tar"]).skipped
    assert where == "shards/shard-000.tar: lost" and message.startswith("shards/shard-000.tar: lost: no image member")
