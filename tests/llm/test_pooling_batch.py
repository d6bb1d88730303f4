"""The pooling batch's layout: how a request's inputs are cut into batches, joined, and read back."""

import msgspec
import pytest

from dynamo.frontend.embeddings import pooling_request
from dynamo.llm.pooling_batch import BatchItem, batch_request, batch_sizes, split_batch
from dynamo.llm.protocol import PreprocessedRequest, request_decoder, request_encoder


def test_one_batch_per_worker_even_in_tokens():
    assert batch_sizes([10] * 32, 2) == [16, 16]
    assert batch_sizes([10] * 9, 3) == [3, 3, 3]
    assert batch_sizes([100, 1, 1, 1, 1, 96], 2) == [1, 5]  # by tokens, not by count
    assert batch_sizes([5] * 7, 1) == [7]


def test_never_more_batches_than_inputs_and_never_empty():
    assert batch_sizes([10, 10], 8) == [1, 1]
    assert batch_sizes([], 2) == []
    assert batch_sizes([1000, 1, 1, 1], 4) == [1, 1, 1, 1]
    for workers in range(1, 6):
        for lengths in ([1] * 11, [50, 1, 1, 1, 1, 1, 1, 60], list(range(1, 20))):
            sizes = batch_sizes(lengths, workers)
            assert sum(sizes) == len(lengths) and all(n > 0 for n in sizes)
            assert len(sizes) == min(len(lengths), workers)


def test_large_requests_are_cut_below_the_limits():
    sizes = batch_sizes([10] * 2048, 2, max_inputs=128)
    assert len(sizes) == 16 and max(sizes) <= 128
    sizes = batch_sizes([1000] * 100, 1, max_tokens=8000)
    assert len(sizes) == 13 and max(sizes) * 1000 <= 8000


def wire(i: int, ids: list[int], types: list[int] | None = None) -> PreprocessedRequest:
    return pooling_request("m", f"r-{i}", ids, "classify", {"token_type_ids": types} if types else None)


def test_a_batch_joins_its_inputs_and_reads_back_the_same():
    parts = [wire(0, [1, 2, 3], [0, 0, 1]), wire(1, [4], [0]), wire(2, [5, 6], [0, 1])]
    batch = batch_request(parts)
    assert batch.token_ids == [1, 2, 3, 4, 5, 6] and batch.pooling_lengths == [3, 1, 2]
    assert batch.task == "classify" and batch.stop_conditions.max_tokens == 1 and batch.request_id == "r-0+3"
    decoded = request_decoder.decode(request_encoder.encode(batch))
    assert split_batch(decoded) == [BatchItem([1, 2, 3], [0, 0, 1]), BatchItem([4], [0]), BatchItem([5, 6], [0, 1])]
    plain = batch_request([wire(0, [7, 8]), wire(1, [9])])
    assert split_batch(plain) == [BatchItem([7, 8], None), BatchItem([9], None)] and plain.extra_args is None


def test_options_other_than_segments_are_the_batchs():
    parts = [msgspec.structs.replace(wire(i, [i + 1]), extra_args={"use_activation": False}) for i in range(2)]
    assert batch_request(parts).extra_args == {"use_activation": False}
    assert batch_request(parts[:1]) is parts[0]  # one input: a plain request


def test_a_lone_request_reads_as_one_input():
    assert split_batch(wire(0, [1, 2], [0, 1])) == [BatchItem([1, 2], [0, 1])]


@pytest.mark.parametrize("lengths", [[2, 2], [3, 0], [-1, 4], []])
def test_lengths_that_do_not_add_up_are_refused(lengths):
    bad = msgspec.structs.replace(wire(0, [1, 2, 3]), pooling_lengths=lengths)
    if lengths == []:  # no lengths: the request's tokens are one input
        assert split_batch(bad) == [BatchItem([1, 2, 3], None)]
        return
    with pytest.raises(ValueError):
        split_batch(bad)


def test_segment_ids_must_cover_the_tokens():
    bad = msgspec.structs.replace(wire(0, [1, 2, 3], [0, 1]), pooling_lengths=[1, 2])
    with pytest.raises(ValueError):
        split_batch(bad)
