import asyncio
import threading
import time

import pytest

from modelforge.serve.batching import BatchSettings, MicroBatcher, QueueFullError


class Recorder:
    """A fake model: doubles numbers, records each batch and the thread it ran on; 'bad' fails its batch."""

    def __init__(self, delay: float = 0.0):
        self.batches: list[list] = []
        self.threads: set[str] = set()
        self.delay = delay

    def __call__(self, items):
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if "bad" in items:
            raise ValueError("bad input")
        return [item * 2 for item in items]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_are_gathered_into_one_batch_off_the_event_loop():
    model = Recorder()

    async def main():
        batcher = MicroBatcher(model, BatchSettings(max_batch_size=8, max_wait_ms=50), "fake")
        results = await asyncio.gather(*(batcher.submit([i]) for i in range(5)))
        await batcher.stop()
        return results, batcher.stats

    results, stats = run(main())
    assert results == [[0], [2], [4], [6], [8]]
    assert model.batches == [[0, 1, 2, 3, 4]]  # one model call for five requests, in arrival order
    assert stats.batches == 1 and stats.items == 5 and stats.largest_batch == 5
    assert model.threads and all(name.startswith("modelforge-fake") for name in model.threads)


def test_batches_never_exceed_max_batch_size_and_multi_input_requests_are_split_back():
    model = Recorder()

    async def main():
        batcher = MicroBatcher(model, BatchSettings(max_batch_size=4, max_wait_ms=20), "fake")
        results = await asyncio.gather(batcher.submit([1, 2, 3]), batcher.submit([4, 5]), batcher.submit([6]))
        await batcher.stop()
        return results

    assert run(main()) == [[2, 4, 6], [8, 10], [12]]
    assert all(len(batch) <= 4 for batch in model.batches)
    assert sorted(x for batch in model.batches for x in batch) == [1, 2, 3, 4, 5, 6]


def test_batch_size_one_runs_each_request_alone():
    model = Recorder()

    async def main():
        batcher = MicroBatcher(model, BatchSettings(max_batch_size=1, max_wait_ms=50), "fake")
        await asyncio.gather(*(batcher.submit([i]) for i in range(4)))
        await batcher.stop()

    run(main())
    assert model.batches == [[0], [1], [2], [3]]


def test_a_lone_request_waits_at_most_max_wait_ms():
    async def main():
        batcher = MicroBatcher(Recorder(), BatchSettings(max_batch_size=64, max_wait_ms=30), "fake")
        start = time.perf_counter()
        await batcher.submit([1])
        elapsed = time.perf_counter() - start
        await batcher.stop()
        return elapsed

    assert 0.025 <= run(main()) < 5  # waited for company, but not for ever


def test_full_queue_is_refused_at_once():
    model = Recorder(delay=0.2)

    async def main():
        batcher = MicroBatcher(model, BatchSettings(max_batch_size=1, max_wait_ms=0, queue_size=2), "fake")
        outcomes = await asyncio.gather(*(batcher.submit([i]) for i in range(6)), return_exceptions=True)
        await batcher.stop()
        return outcomes, batcher.stats

    outcomes, stats = run(main())
    refused = [o for o in outcomes if isinstance(o, QueueFullError)]
    assert refused and all(o.retry_after >= 1 for o in refused)
    assert stats.rejected == len(refused)
    assert [o for o in outcomes if isinstance(o, list)]  # the queued ones were still served


def test_a_failing_input_fails_only_its_own_request():
    model = Recorder()

    async def main():
        batcher = MicroBatcher(model, BatchSettings(max_batch_size=8, max_wait_ms=50), "fake")
        outcomes = await asyncio.gather(batcher.submit([1]), batcher.submit(["bad"]), batcher.submit([3]),
                                        return_exceptions=True)
        await batcher.stop()
        return outcomes

    good, bad, other = run(main())
    assert good == [2] and other == [6]
    assert isinstance(bad, ValueError)


def test_settings_are_checked():
    with pytest.raises(ValueError):
        BatchSettings(max_batch_size=0)
    with pytest.raises(ValueError):
        BatchSettings(max_wait_ms=-1)
