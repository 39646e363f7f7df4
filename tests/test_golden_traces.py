"""Features that are off cost nothing: every golden case reproduces its stored traces exactly.

The golden files (``tests/golden/``, written by ``tests/golden/make_golden.py`` at the commit
its docstring names) hold the requests and steps tables of every shipped scenario and of the
step-compression workloads in both modes. Each case is simulated again and its tables must equal
the stored ones: the same columns in the same order with the same Arrow types, and the same
values bit for bit (floats compared as their 64-bit patterns, so NaN equals NaN and -0.0 does
not equal 0.0). Tables are compared rather than file bytes, so the test does not depend on the
pyarrow version that writes or reads Parquet.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.golden.make_golden import GOLDEN_DIR, TABLES, golden_path, simulate

CASES = sorted(
    p.name.removesuffix(".requests.parquet") for p in GOLDEN_DIR.glob("*.requests.parquet")
)


def assert_tables_identical(got: pa.Table, want: pa.Table, what: str) -> None:
    """Same column names, order and types, same row count, same values bit for bit."""
    assert got.schema.names == want.schema.names, f"{what}: columns differ"
    for field, expected in zip(got.schema, want.schema, strict=True):
        assert field.type == expected.type, f"{what}.{field.name}: {field.type} != {expected.type}"
    assert got.num_rows == want.num_rows, f"{what}: {got.num_rows} rows != {want.num_rows}"
    for name in got.schema.names:
        a, b = got[name].combine_chunks(), want[name].combine_chunks()
        assert a.null_count == b.null_count, f"{what}.{name}: null counts differ"
        if pa.types.is_floating(a.type):
            x, y = a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False)
            same = x.view(np.int64) == y.view(np.int64)
        else:
            same = np.array(a.to_pylist(), dtype=object) == np.array(b.to_pylist(), dtype=object)
        if not same.all():
            row = int(np.flatnonzero(~same)[0])
            raise AssertionError(f"{what}.{name}: row {row} is {a[row]} now, {b[row]} golden")


def test_golden_cases_are_stored():
    assert len(CASES) >= 46  # 12 shipped scenarios, both modes of 17 compression workloads
    for case in CASES:
        for table in TABLES:
            assert golden_path(case, table).is_file()


@pytest.mark.parametrize(
    "changed",
    [
        pa.table({"x": [1.0, np.nan], "n": [1, 2]}).rename_columns(["n", "x"]),  # renamed
        pa.table({"x": [1.0, np.nan], "n": pa.array([1, 2], pa.int32())}),  # type
        pa.table({"x": [1.0, 0.5], "n": [1, 2]}),  # NaN became a number
        pa.table({"x": [1.0, np.nan], "n": [1, 3]}),  # an integer
        pa.table({"x": [1.0 + 2**-52, np.nan], "n": [1, 2]}),  # one ulp
        pa.table({"x": [1.0], "n": [1]}),  # a row
    ],
)
def test_any_difference_fails_the_comparison(changed):
    golden = pa.table({"x": [1.0, np.nan], "n": [1, 2]})
    assert_tables_identical(pa.table({"x": [1.0, np.nan], "n": [1, 2]}), golden, "same")
    with pytest.raises(AssertionError):
        assert_tables_identical(changed, golden, "changed")


@pytest.mark.parametrize("case", CASES)
def test_traces_equal_the_golden_traces(case):
    tables = simulate(case)
    for name in TABLES:
        assert_tables_identical(tables[name], pq.read_table(golden_path(case, name)), name)
