"""The trainer's CPU thread choice (tempoflow.train.threads) on a simulated clock."""

import torch

from tempoflow.train import threads as threads_module
from tempoflow.train.threads import ThreadGovernor, thread_governor


class Clock:
    """Advances by the simulated cost of a step at the thread count torch is set to."""

    def __init__(self, seconds_per_step: dict[int, float]):
        self.now, self.cost = 0.0, seconds_per_step

    def __call__(self) -> float:
        return self.now

    def run(self, governor: ThreadGovernor, steps: int) -> list[int]:
        used = []
        for _ in range(steps):
            used.append(torch.get_num_threads())
            self.now += self.cost[torch.get_num_threads()]
            governor.step()
        return used


def test_keeps_the_faster_count_and_reprobes(monkeypatch):
    """Free machine: 2 threads faster; then a competitor arrives and 1 thread wins; the governor
    follows after its next probe."""
    clock = Clock({2: 0.1, 1: 0.17})
    monkeypatch.setattr(threads_module.time, "perf_counter", clock)
    gov = ThreadGovernor((2, 1), window=10, probe_every=4)
    used = clock.run(gov, 80)
    assert used[:10] == [2] * 10 and used[10:20] == [1] * 10  # each count measured once
    assert used[20:40] == [2] * 20  # then the faster one
    assert gov.rates[2] > gov.rates[1]
    clock.cost = {2: 0.6, 1: 0.18}  # a second job now shares the cores: 2 threads crawl
    used = clock.run(gov, 120)
    assert used[-30:] == [1] * 30 and used.count(1) >= 90  # probes of 2 threads are 1 window in 4
    torch.set_num_threads(2)
    gov.finish()  # after training: the fastest measured count, not whatever a probe left
    assert torch.get_num_threads() == 1


def test_fixed_count_and_gpu_need_no_governor():
    assert thread_governor(1, on_cpu=True) is None and torch.get_num_threads() == 1
    assert thread_governor(0, on_cpu=False) is None
