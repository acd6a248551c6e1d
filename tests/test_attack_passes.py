"""Attacks run no pass twice and report the same numbers: PGD with early stopping returns
the points PGD without it returns (the first fooling iterate, or the final one), the
predicted classes it returns are the model's on those points, and FGSM from one clean
gradient equals FGSM computed afresh at each eps."""

from __future__ import annotations

import pytest
import torch

from audit import attacks


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 64, 5)).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _data(net: torch.nn.Module, n: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)  # every sample correct: every one is attacked
    return x, y


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("restarts", [1, 3])
def test_early_stopping_changes_no_reported_number(net: torch.nn.Module, norm: str, restarts: int) -> None:
    x, y = _data(net)
    eps = 0.03 if norm == "linf" else 0.4
    counts = {}

    def run(early: bool) -> attacks.AttackResult:
        n = [0]

        def forward(t: torch.Tensor) -> torch.Tensor:
            n[0] += t.shape[0]
            return net(t)

        out = attacks.pgd(forward, x, y, eps=eps, norm=norm, steps=15, restarts=restarts, batch_size=40,
                          generator=torch.Generator().manual_seed(7), early_stop=early)
        counts[early] = n[0]
        return out

    full, early = run(False), run(True)
    with torch.no_grad():
        fooled_full = net(full.x_adv).argmax(1) != y
        fooled_early = net(early.x_adv).argmax(1) != y
        known = early.pred >= 0
        assert torch.equal(net(early.x_adv[known]).argmax(1), early.pred[known])
    assert 0.1 < float(fooled_full.float().mean()) < 0.95, "compare where the attack bites but not always"
    assert torch.equal(fooled_full, fooled_early)
    torch.testing.assert_close(early.x_adv, full.x_adv, rtol=0, atol=1e-6)
    assert torch.equal(early.bad_grad, full.bad_grad)
    assert counts[True] < counts[False]  # the fooled samples' remaining steps are saved


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fgsm_from_one_clean_gradient_equals_fgsm_at_each_eps(net: torch.nn.Module, norm: str) -> None:
    x, y = _data(net)
    n = [0]

    def count(k: int) -> None:
        n[0] += k

    g = attacks.clean_gradient(net, x, y, count_backward=count, batch_size=40)
    assert n[0] == len(x)
    for eps in (0.01, 0.05, 0.2):
        fresh = attacks.fgsm(net, x, y, eps=eps, norm=norm)
        reused = attacks.fgsm(net, x, y, eps=eps, norm=norm, gradient=g)
        assert fresh.passes == {"forward": len(x), "backward": len(x)} and reused.passes["backward"] == 0
        torch.testing.assert_close(reused.x_adv, fresh.x_adv, rtol=0, atol=1e-7)
        d = (reused.x_adv - x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert float(size.max()) <= eps * (1 + 1e-5)


def test_samples_at_a_fixed_point_leave_with_the_same_points() -> None:
    """A linear model's gradient sign never changes, so Linf PGD walks every coordinate to
    the bound it pushes toward and then stays there: with early stopping those samples
    leave at the fixed point (with the class the loop gave it), without it they repeat
    the same pass until the last step. The returned points are the same."""
    torch.manual_seed(3)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
    for p in lin.parameters():
        p.requires_grad_(False)
    x, y = _data(lin, n=64)
    counts = {}

    def run(early: bool) -> attacks.AttackResult:
        n = [0]

        def forward(t: torch.Tensor) -> torch.Tensor:
            n[0] += t.shape[0]
            return lin(t)

        out = attacks.pgd(forward, x, y, eps=0.02, steps=20, batch_size=32, random_start=False, early_stop=early)
        counts[early] = n[0]
        return out

    full, early = run(False), run(True)
    with torch.no_grad():
        fooled_full = lin(full.x_adv).argmax(1) != y
        known = early.pred >= 0
        assert torch.equal(lin(early.x_adv[known]).argmax(1), early.pred[known])
    assert not bool(fooled_full.all()), "some samples must survive to reach a fixed point"
    assert int((known & ~fooled_full).sum()) > 0  # survivors classified at their fixed point
    torch.testing.assert_close(early.x_adv, full.x_adv, rtol=0, atol=0)
    assert torch.equal(lin(early.x_adv).argmax(1) != y, fooled_full)
    # 20 steps of 2.5 eps / 20: every coordinate is at its bound after 8 steps, so every
    # survivor leaves at step 9 or 10 of 20
    assert counts[True] < 0.6 * counts[False]


class _Bowl(torch.nn.Module):
    """Class 0 always wins, by a margin that shrinks toward a point c: the loss rises toward
    c, so Linf sign steps overshoot it and flip back and forth (a 2-cycle) in every
    coordinate once there, and no sample is ever fooled."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = ((x.flatten(1) - 0.53) ** 2).sum(1)
        return torch.stack([10.0 + d, torch.zeros_like(d)], dim=1)


@pytest.mark.parametrize("steps", [20, 21])  # both parities of where the 2-cycle stands at the end
def test_samples_in_a_two_cycle_leave_with_the_same_points(steps: int) -> None:
    bowl = _Bowl()
    x = 0.4 + 0.2 * torch.rand(24, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.zeros(24, dtype=torch.long)
    counts = {}

    def run(early: bool) -> attacks.AttackResult:
        n = [0]

        def forward(t: torch.Tensor) -> torch.Tensor:
            n[0] += t.shape[0]
            return bowl(t)

        out = attacks.pgd(forward, x, y, eps=0.3, steps=steps, batch_size=16, random_start=False, early_stop=early)
        counts[early] = n[0]
        return out

    full, early = run(False), run(True)
    torch.testing.assert_close(early.x_adv, full.x_adv, rtol=0, atol=0)
    assert bool((early.pred == 0).all())  # every point classified by the loop, never fooled
    assert counts[True] < 0.7 * counts[False]
