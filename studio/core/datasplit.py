"""The split and pack stages of data preparation: examples -> the training and evaluation sets.

`hold_out` holds data.eval_fraction of the examples out for evaluation (a seeded split: the same
rows for the same examples and seed), `pack` lays plain text end to end and cuts it into
max_seq_len blocks, and `cap_eval` keeps the first data.eval_max evaluation examples. Every stage
works on `datasets.Dataset`s (Arrow) and returns new ones; the callers word the notes.
"""

from __future__ import annotations

import math

from .errors import DataError


def hold_out(train, fraction: float, seed: int):
    """(train, evaluation): floor(n x fraction) examples, at least 1, held out by datasets' seeded
    train_test_split. Evaluation is None when fraction is 0, or when no example would be left to
    train on (the caller says so)."""
    n = len(train)
    if float(fraction) <= 0:
        return train, None
    n_eval = max(1, math.floor(n * float(fraction)))
    if n - n_eval < 1:
        return train, None
    split = train.train_test_split(test_size=n_eval, seed=seed)
    return split["train"], split["test"]


def pack(train, evaluation, block: int, where: str):
    """(train, evaluation) packed into `block`-token rows. DataError when the training text makes
    no block of two tokens or more (one token predicts nothing)."""
    train = pack_blocks(train, block)
    evaluation = pack_blocks(evaluation, block) if evaluation is not None else None
    if not any(n >= 2 for n in token_lengths(train)):
        raise DataError(f"{where}: too little text to train on (no block of two tokens or more)")
    return train, evaluation


def pack_blocks(ds, block: int):
    """Every example's tokens end to end, cut into `block`-token rows (the last, shorter one kept,
    unless it has a single token): one int32 copy of the token stream, in Arrow."""
    import numpy as np
    import pyarrow as pa
    import datasets

    pieces = []
    for table in ds.with_format("arrow").iter(batch_size=50_000):
        column = table.column("input_ids").combine_chunks()
        pieces.append(np.asarray(column.flatten(), dtype=np.int32))
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    offsets = np.arange(0, len(stream), block, dtype=np.int64)
    offsets = np.append(offsets, len(stream))
    if len(offsets) > 2 and offsets[-1] - offsets[-2] < 2:
        offsets = offsets[:-1]
        stream = stream[:offsets[-1]]
    values = pa.array(stream, type=pa.int32())
    ids = pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32() if len(stream) < 2**31 else pa.int64()),
                                   values) if len(stream) < 2**31 else pa.LargeListArray.from_arrays(offsets, values)
    table = pa.table({"input_ids": ids, "labels": ids})
    return datasets.Dataset(table)


def cap_eval(evaluation, eval_max: int):
    """(evaluation, held out): the first `eval_max` evaluation examples (0: all of them), and how
    many were held out when that left some out (else 0)."""
    if evaluation is None or not eval_max or len(evaluation) <= eval_max:
        return evaluation, 0
    return evaluation.select(range(eval_max)), len(evaluation)


def token_lengths(ds):
    """The number of tokens of each example, as a numpy array."""
    import pyarrow.compute as pc

    return pc.list_value_length(ds.with_format("arrow")[:]["input_ids"]).to_numpy(zero_copy_only=False)
