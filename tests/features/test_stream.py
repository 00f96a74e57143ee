"""Resumable row streams: resume, stale partial output, atomic finalize."""

from __future__ import annotations

import numpy as np
import pytest

from poseless.features.stream import ArrayStream, partial_dir, read_ids


def test_resume_restart_and_finalize(tmp_path):
    out = tmp_path / "emb"
    ids = [f"i{k}" for k in range(5)]
    s = ArrayStream(out, "rows.npy", ids, (2,), "float16", key="a")
    s.write(np.ones((2, 2)))
    del s  # "killed"
    again = ArrayStream(out, "rows.npy", ids, (2,), "float16", key="a")
    assert again.done == 2, "same fingerprint resumes"
    with pytest.raises(RuntimeError, match="only 2 of 5 rows written"):
        again.finalize()
    with pytest.raises(ValueError, match="exceed the 5 items"):
        again.write(np.zeros((4, 2)))
    other = ArrayStream(out, "rows.npy", ids, (2,), "float16", key="b")
    assert other.done == 0, "another fingerprint starts over"
    other.write(np.arange(10).reshape(5, 2))
    assert not out.exists(), "nothing at the output path before finalize"
    other.finalize()
    assert not partial_dir(out).exists()
    np.testing.assert_array_equal(np.load(out / "rows.npy"), np.arange(10).reshape(5, 2))
    assert read_ids(out / "ids.txt") == ids
    assert not (out / "progress.json").exists()
