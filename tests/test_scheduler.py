"""MaskedTokenScheduler: config round trip, masking schedules, the kept-token count, mask and token sampling."""

import math

import pytest
import torch

from iter_diffusers import MaskedTokenScheduler, MaskedTokenSchedulerOutput
from iter_diffusers.schedulers.scheduling_masked_token import masking_ratio

SCHEDULES = ["linear", "cosine", "pow2", "exp3"]
K = 16  # codebook size of the dummy logits


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def official_gamma(r: torch.Tensor, mode: str) -> torch.Tensor:
    """γ as the official ``TokenRefine.gamma_func`` computes it (torch float32 ops)."""
    if mode == "linear":
        return 1 - r
    if mode == "cosine":
        return torch.cos(r * math.pi / 2)
    if mode.startswith("pow"):
        return 1.0 - r ** float(mode[3:])
    if mode.startswith("exp"):
        x = float(mode[3:])
        return (x - 1) / x * (1.0 - x ** (r - 1))
    raise AssertionError(mode)


def official_num_kept(i: int, T: int, h: int, w: int, mode: str) -> int:
    return int((1 - official_gamma(torch.Tensor([i / T]), mode)) * w * h)


def dummy_logits(batch=2, h=4, w=6, seed=0):
    return torch.randn(batch, K, h, w, generator=gen(seed)) * 2


def dummy_evaluator_logits(batch=2, h=4, w=6, seed=1):
    return torch.randn(batch, 2, h, w, generator=gen(seed))


# ---------------------------------------------------------------------------------------------- config


def test_save_config_from_pretrained_round_trip(tmp_path):
    scheduler = MaskedTokenScheduler(
        masking_schedule="cosine", mask_threshold=0.6, token_temperature=0.8, mask_temperature=1.3
    )
    scheduler.save_pretrained(tmp_path / "scheduler")
    assert (tmp_path / "scheduler" / "scheduler_config.json").is_file()
    loaded = MaskedTokenScheduler.from_pretrained(tmp_path, subfolder="scheduler")
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(scheduler.config)
    assert public(loaded.config)["masking_schedule"] == "cosine"

    logits, ev = dummy_logits(), dummy_evaluator_logits()
    sample = torch.zeros(2, 4, 6, dtype=torch.long)
    kept = torch.zeros(2, 4, 6)
    outs = []
    for s in (scheduler, loaded):
        s.set_timesteps(5)
        t = s.timesteps[2]
        step = s.step(logits, t, sample, generator=gen(7)).prev_sample
        mask = s.sample_mask(ev, t, kept, generator=gen(8))
        outs.append((step, mask, s.trusted_mask(ev), s.num_kept_tokens(t, 4, 6)))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])
    assert torch.equal(outs[0][2], outs[1][2])
    assert outs[0][3] == outs[1][3]


def test_from_config_override():
    scheduler = MaskedTokenScheduler.from_config(MaskedTokenScheduler().config, masking_schedule="pow2")
    assert scheduler.config.masking_schedule == "pow2"
    assert MaskedTokenScheduler.order == 1


@pytest.mark.parametrize("name", ["foo", "Linear", "pow", "expabc", "exp0", "pow-1", ""])
def test_bad_schedule_name_raises(name):
    with pytest.raises(ValueError, match="masking_schedule"):
        MaskedTokenScheduler(masking_schedule=name)


# ---------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("T", [1, 3, 8])
def test_kept_counts_non_decreasing(schedule, T):
    scheduler = MaskedTokenScheduler(masking_schedule=schedule)
    scheduler.set_timesteps(T)
    h, w = 16, 24
    counts = [scheduler.num_kept_tokens(t, h, w) for t in scheduler.timesteps]
    assert len(counts) == T
    assert all(a <= b for a, b in zip(counts, counts[1:])), counts
    assert all(0 <= n < h * w for n in counts), counts  # the last step still re-predicts something
    if schedule in ("linear", "cosine"):
        assert counts[0] == 0  # γ(0) = 1: the first step keeps nothing


def test_linear_counts_are_exact_fractions():
    scheduler = MaskedTokenScheduler(masking_schedule="linear")
    scheduler.set_timesteps(8)
    assert [scheduler.num_kept_tokens(t, 16, 16) for t in scheduler.timesteps] == [32 * i for i in range(8)]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_num_kept_tokens_matches_official_float32_formula(schedule):
    scheduler = MaskedTokenScheduler(masking_schedule=schedule)
    for T in range(1, 13):
        scheduler.set_timesteps(T)
        for h, w in [(16, 16), (8, 24), (20, 24), (7, 9), (13, 11), (40, 40)]:
            ours = [scheduler.num_kept_tokens(t, h, w) for t in scheduler.timesteps]
            theirs = [official_num_kept(i, T, h, w, schedule) for i in range(T)]
            assert ours == theirs, (schedule, T, h, w)


def test_float32_arithmetic_matters():
    """The comparison above can fail: float64 arithmetic gives one token fewer here (cosine, T=3, 16x16, i=2)."""
    float64 = int((1 - math.cos(2 / 3 * math.pi / 2)) * 16 * 16)
    assert float64 == 127
    scheduler = MaskedTokenScheduler(masking_schedule="cosine")
    scheduler.set_timesteps(3)
    assert scheduler.num_kept_tokens(0, 16, 16) == official_num_kept(2, 3, 16, 16, "cosine") == 128


def test_masking_ratio_values():
    r = torch.tensor([0.0, 0.5, 1.0])
    assert torch.allclose(masking_ratio(r, "linear"), torch.tensor([1.0, 0.5, 0.0]))
    assert torch.allclose(masking_ratio(r, "cosine"), torch.tensor([1.0, math.sqrt(0.5), 0.0]), atol=1e-6)
    assert torch.allclose(masking_ratio(r, "pow2"), torch.tensor([1.0, 0.75, 0.0]))
    assert torch.allclose(masking_ratio(r, "exp3"), torch.tensor([4 / 9, 2 / 3 * (1 - 3**-0.5), 0.0]), atol=1e-6)


# ---------------------------------------------------------------------------------------------- timesteps


def test_set_timesteps_resets_state():
    scheduler = MaskedTokenScheduler()
    assert len(scheduler) == 0
    with pytest.raises(RuntimeError, match="set_timesteps"):
        scheduler.num_kept_tokens(0, 4, 4)
    scheduler.set_timesteps(8)
    assert scheduler.timesteps.tolist() == list(range(7, -1, -1))
    assert scheduler.num_kept_tokens(scheduler.timesteps[4], 16, 16) == 128
    scheduler.set_timesteps(4)
    assert scheduler.num_inference_steps == 4 and len(scheduler) == 4
    assert scheduler.timesteps.tolist() == [3, 2, 1, 0]
    assert scheduler.timesteps.dtype == torch.int64
    assert [scheduler.index_for_timestep(t) for t in scheduler.timesteps] == [0, 1, 2, 3]
    assert scheduler.num_kept_tokens(scheduler.timesteps[2], 16, 16) == 128  # 2/4, not 2/8
    with pytest.raises(ValueError):
        scheduler.set_timesteps(0)


# ---------------------------------------------------------------------------------------------- step


def test_step_output_and_tuple_equal():
    scheduler = MaskedTokenScheduler()
    scheduler.set_timesteps(4)
    logits, sample = dummy_logits(), torch.zeros(2, 4, 6, dtype=torch.long)
    out = scheduler.step(logits, 1, sample, generator=gen(3))
    assert isinstance(out, MaskedTokenSchedulerOutput)
    tup = scheduler.step(logits, 1, sample, generator=gen(3), return_dict=False)
    assert isinstance(tup, tuple) and len(tup) == 2
    assert torch.equal(out.prev_sample, tup[0])
    assert torch.equal(out.pred_original_sample, tup[1])
    assert torch.equal(out[0], out.prev_sample)
    assert torch.equal(out.pred_original_sample, logits.argmax(1))


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 4, 6), (3, 5, 3)])
def test_step_shapes_preserved(shape):
    b, h, w = shape
    scheduler = MaskedTokenScheduler()
    scheduler.set_timesteps(2)
    sample = torch.full(shape, K, dtype=torch.long)  # all mask token
    out = scheduler.step(torch.randn(b, K, h, w, generator=gen()), 0, sample, generator=gen())
    assert out.prev_sample.shape == shape and out.prev_sample.dtype == torch.int64
    assert out.pred_original_sample.shape == shape
    # every position is drawn from the codebook: no mask token survives a step
    assert 0 <= out.prev_sample.min() and out.prev_sample.max() < K


def test_step_shape_mismatch_raises():
    scheduler = MaskedTokenScheduler()
    scheduler.set_timesteps(2)
    with pytest.raises(ValueError, match="does not match"):
        scheduler.step(torch.randn(2, K, 4, 6), 0, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="does not match"):
        scheduler.step(torch.randn(2, K, 4, 6), 0, torch.zeros(3, 4, 6, dtype=torch.long))


def test_step_seeded_determinism_and_seed_dependence():
    scheduler = MaskedTokenScheduler()
    scheduler.set_timesteps(2)
    logits, sample = torch.zeros(2, K, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long)  # uniform: maximal randomness
    a = scheduler.step(logits, 0, sample, generator=gen(1)).prev_sample
    b = scheduler.step(logits, 0, sample, generator=gen(1)).prev_sample
    c = scheduler.step(logits, 0, sample, generator=gen(2)).prev_sample
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_step_generator_list_equals_per_image():
    scheduler = MaskedTokenScheduler()
    scheduler.set_timesteps(3)
    logits, sample = dummy_logits(batch=3), torch.zeros(3, 4, 6, dtype=torch.long)
    batch = scheduler.step(logits, 1, sample, generator=[gen(10), gen(11), gen(12)]).prev_sample
    for b in range(3):
        single = scheduler.step(logits[b : b + 1], 1, sample[b : b + 1], generator=gen(10 + b)).prev_sample
        assert torch.equal(batch[b : b + 1], single)
    # a single generator is consumed in batch order
    shared = gen(10)
    one = scheduler.step(logits, 1, sample, generator=shared).prev_sample
    assert torch.equal(one[0], batch[0])
    with pytest.raises(ValueError, match="generators"):
        scheduler.step(logits, 1, sample, generator=[gen(1), gen(2)])


def test_token_temperature_changes_distribution():
    scheduler = MaskedTokenScheduler()
    scheduler.set_timesteps(2)
    logits = torch.randn(2, K, 8, 8, generator=gen(4)) * 0.5
    target = torch.randint(0, K, (2, 8, 8), generator=gen(5))
    logits.scatter_add_(1, target[:, None], torch.full((2, 1, 8, 8), 3.0))  # a clear winner at every position
    assert torch.equal(logits.argmax(1), target)
    sample = torch.zeros(2, 8, 8, dtype=torch.long)
    cold = scheduler.step(logits, 0, sample, generator=gen(6), token_temperature=1e-3).prev_sample
    assert torch.equal(cold, target)  # temperature -> 0: argmax
    warm = scheduler.step(logits, 0, sample, generator=gen(6), token_temperature=1.0).prev_sample
    hot = scheduler.step(logits, 0, sample, generator=gen(6), token_temperature=1e3).prev_sample
    agree_warm = (warm == target).float().mean().item()
    agree_hot = (hot == target).float().mean().item()
    assert 0.3 < agree_warm < 0.9  # often, but not always, the winner (p(winner) ≈ 0.55 here)
    assert agree_hot < 0.3  # near uniform over 16 codes
    assert hot.unique().numel() > 8
    # the config default is used when no temperature is passed
    cfg_cold = MaskedTokenScheduler(token_temperature=1e-3)
    cfg_cold.set_timesteps(2)
    assert torch.equal(cfg_cold.step(logits, 0, sample, generator=gen(6)).prev_sample, target)


# ---------------------------------------------------------------------------------------------- masks


def test_trusted_mask_threshold():
    scheduler = MaskedTokenScheduler(mask_threshold=0.7)
    ev = dummy_evaluator_logits(batch=2, h=8, w=8)
    p = ev.softmax(1)[:, 1]
    assert torch.equal(scheduler.trusted_mask(ev), (p >= 0.7).float())
    assert torch.equal(scheduler.trusted_mask(ev, 0.3), (p >= 0.3).float())
    assert scheduler.trusted_mask(ev).shape == (2, 8, 8)


@pytest.mark.parametrize("prev_count", [0, 5, 20])
def test_sample_mask_grows_to_target(prev_count):
    scheduler = MaskedTokenScheduler(masking_schedule="linear")
    scheduler.set_timesteps(4)
    h, w = 6, 8  # N = 48
    t = scheduler.timesteps[2]  # n = 24
    n = scheduler.num_kept_tokens(t, h, w)
    assert n == 24
    ev = dummy_evaluator_logits(batch=3, h=h, w=w)
    prev = torch.zeros(3, h, w)
    for b in range(3):
        prev[b].view(-1)[torch.randperm(h * w, generator=gen(b))[:prev_count]] = 1
    new = scheduler.sample_mask(ev, t, prev, generator=[gen(1), gen(2), gen(3)])
    assert new.shape == prev.shape and new.dtype == prev.dtype
    assert set(new.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(new >= prev)  # old positions kept
    for b in range(3):
        added = int((new[b] - prev[b]).sum())
        assert added == max(1, n - prev_count)
        assert int(new[b].sum()) == max(n, prev_count + 1)


def test_sample_mask_adds_at_least_one():
    scheduler = MaskedTokenScheduler(masking_schedule="linear")
    scheduler.set_timesteps(4)
    ev = dummy_evaluator_logits(batch=1, h=4, w=4)
    prev = torch.zeros(1, 4, 4)
    prev.view(-1)[:12] = 1  # more than n = 8 for t index 2
    new = scheduler.sample_mask(ev, scheduler.timesteps[2], prev, generator=gen())
    assert int(new.sum()) == 13
    assert torch.all(new >= prev)
    # the first step (n = 0) still draws one position
    first = scheduler.sample_mask(ev, scheduler.timesteps[0], torch.zeros(1, 4, 4), generator=gen())
    assert int(first.sum()) == 1


def test_sample_mask_follows_probabilities():
    """Only positions with non-negligible probability are drawn: never kept ones, never near-zero ones."""
    scheduler = MaskedTokenScheduler(masking_schedule="linear")
    scheduler.set_timesteps(2)
    h, w = 4, 8
    ev = torch.zeros(1, 2, h, w)
    ev[:, 1, :, :4] = 30.0  # left half: p(right) ≈ 1
    ev[:, 0, :, 4:] = 30.0  # right half: p(right) ≈ 1e-13
    prev = torch.zeros(1, h, w)
    prev[0, 0, :4] = 1  # four of the likely positions already kept
    for seed in range(5):
        new = scheduler.sample_mask(ev, scheduler.timesteps[1], prev, generator=gen(seed))  # n = 16
        assert int(new.sum()) == 16
        added = new - prev
        assert added[..., 4:].sum() == 0  # the unlikely half is never drawn...
        assert added[0, 0, :4].sum() == 0  # ...nor a kept position
        assert torch.equal(new[..., :4], torch.ones(1, h, 4))


def test_sample_mask_generator_list_equals_per_image():
    scheduler = MaskedTokenScheduler()
    scheduler.set_timesteps(8)
    ev, prev = dummy_evaluator_logits(batch=3, h=8, w=8), torch.zeros(3, 8, 8)
    t = scheduler.timesteps[5]
    batch = scheduler.sample_mask(ev, t, prev, generator=[gen(4), gen(5), gen(6)])
    for b in range(3):
        single = scheduler.sample_mask(ev[b : b + 1], t, prev[b : b + 1], generator=gen(4 + b))
        assert torch.equal(batch[b : b + 1], single)
    with pytest.raises(ValueError, match="generators"):
        scheduler.sample_mask(ev, t, prev, generator=[gen(1)])


def test_mask_temperature_changes_distribution():
    """A hot mask temperature makes the draw ignore φ_e's scores; a cold one follows them."""
    scheduler = MaskedTokenScheduler(masking_schedule="linear")
    scheduler.set_timesteps(2)
    h, w = 16, 16
    ev = torch.zeros(1, 2, h, w)
    ev[:, 1, :, : w // 2] = 1.0  # left half: p(right) = sigmoid(2) ≈ 0.88 at temperature 1
    ev[:, 0, :, w // 2 :] = 1.0  # right half: ≈ 0.12
    t = scheduler.timesteps[1]  # n = 128 = half
    left_share = {}
    for temperature in (0.05, 100.0):
        shares = []
        for seed in range(4):
            new = scheduler.sample_mask(ev, t, torch.zeros(1, h, w), generator=gen(seed), mask_temperature=temperature)
            shares.append(new[..., : w // 2].sum().item() / new.sum().item())
        left_share[temperature] = sum(shares) / len(shares)
    assert left_share[0.05] == 1.0
    assert 0.35 < left_share[100.0] < 0.65


@pytest.mark.parametrize("schedule", ["linear", "cosine", "pow2"])
@pytest.mark.parametrize("size", [(1, 1), (4, 6), (16, 16)])
def test_add_noise_hides_exact_count(size, schedule):
    """The training masking follows the scheduler's own γ (it was hard-coded to cosine)."""
    h, w = size
    scheduler = MaskedTokenScheduler(masking_schedule=schedule)
    batch = 5
    ids = torch.randint(0, K, (batch, h, w), generator=gen(0))
    noisy, mask = scheduler.add_noise(ids, generator=gen(9))
    assert mask.shape == (batch, h, w) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(noisy, ids)  # no mask_token_id: the ids stay, the mask says what is hidden
    progress = torch.rand(batch, generator=gen(9))  # the same first draw
    expected = (masking_ratio(progress, schedule) * h * w).int().clamp(min=1)
    hidden = (1 - mask).flatten(1).sum(1).int()
    assert torch.equal(hidden, expected)
    assert torch.all(hidden >= 1)
    again = scheduler.add_noise(ids, generator=gen(9))[1]
    assert torch.equal(mask, again)
    # an explicit schedule overrides the config's (the training script asks for the official cosine)
    cosine = scheduler.add_noise(ids, generator=gen(9), masking_schedule="cosine")[1]
    expected_cosine = (torch.cos(progress * math.pi / 2) * h * w).int().clamp(min=1)
    assert torch.equal((1 - cosine).flatten(1).sum(1).int(), expected_cosine)
    # with φ_r's mask token id the hidden positions carry it, the visible ones keep their ids
    masked, same_mask = scheduler.add_noise(ids, generator=gen(9), mask_token_id=K)
    assert torch.equal(same_mask, mask)
    assert torch.equal(masked, torch.where(mask.bool(), ids, K))
    assert ids.max() < K  # the originals are untouched


def test_add_noise_keeps_the_stream_of_the_former_random_visible_mask():
    """The draws are those of the former ``random_visible_mask``: r per image, then one score per position,
    the highest scores hidden."""
    scheduler = MaskedTokenScheduler(masking_schedule="cosine")
    batch, h, w = 3, 5, 7
    g = gen(4)
    progress = torch.rand(batch, generator=g)
    scores = torch.rand(batch, h * w, generator=g)
    num_hidden = (torch.cos(progress * math.pi / 2) * h * w).int().clamp(min=1)
    expected = torch.ones(batch, h * w)
    for b in range(batch):
        expected[b, scores[b].argsort(descending=True)[: num_hidden[b]]] = 0
    _, mask = scheduler.add_noise(torch.zeros(batch, h, w, dtype=torch.long), generator=gen(4))
    assert torch.equal(mask, expected.view(batch, h, w))


def test_add_noise_at_given_timesteps():
    """With timesteps the hidden count is that of step i's progress i/T; only the positions are drawn."""
    scheduler = MaskedTokenScheduler(masking_schedule="linear")
    scheduler.set_timesteps(4)
    ids = torch.zeros(4, 4, 8, dtype=torch.long)  # N = 32
    _, mask = scheduler.add_noise(ids, scheduler.timesteps, generator=gen(2))
    assert (1 - mask).flatten(1).sum(1).tolist() == [32, 24, 16, 8]  # γ(i/4)·N for i = 0 … 3
    _, one = scheduler.add_noise(ids[:2], scheduler.timesteps[3], generator=gen(2))
    assert (1 - one).flatten(1).sum(1).tolist() == [8, 8]
    g = gen(2)
    scheduler.add_noise(ids, scheduler.timesteps, generator=g)
    reference = gen(2)
    torch.rand(4, 32, generator=reference)  # the positions only: no draw of r
    assert torch.equal(g.get_state(), reference.get_state())
    with pytest.raises(ValueError, match="timesteps"):
        scheduler.add_noise(ids, scheduler.timesteps[:3], generator=gen(2))


def test_add_noise_draws_on_the_generators_device(monkeypatch):
    """A CUDA generator needs its draws made on CUDA: every torch.rand call gets the generator's device."""
    devices = []
    real_rand = torch.rand

    def recording_rand(*size, generator=None, device=None, **kwargs):
        devices.append((generator.device if generator is not None else None, torch.device(device)))
        return real_rand(*size, generator=generator, device=device, **kwargs)

    monkeypatch.setattr(torch, "rand", recording_rand)
    MaskedTokenScheduler().add_noise(torch.zeros(2, 4, 4, dtype=torch.long), generator=gen(1))
    assert len(devices) == 2 and all(draw == generator for generator, draw in devices)


# ---------------------------------------------------------------------------------------------- the stepper


def trusting(count: int, batch: int = 1, h: int = 4, w: int = 8) -> torch.Tensor:
    """A trusted mask B with ``count`` trusted tokens in every image."""
    mask = torch.zeros(batch, h * w)
    mask[:, :count] = 1
    return mask.view(batch, h, w)


def test_step_depends_on_the_timestep():
    """Same inputs, two timesteps: a step the adaptive start skips passes the sample through and draws nothing;
    an executed step draws new tokens."""
    scheduler = MaskedTokenScheduler(masking_schedule="linear")
    scheduler.set_timesteps(4)  # N = 32: n = 0, 8, 16, 24
    scheduler.set_trusted_mask(trusting(12))  # |B| = 12: steps 0 and 1 are skipped
    assert scheduler.start_indices.tolist() == [2]
    logits = torch.zeros(1, K, 4, 8)  # uniform: any draw changes the map
    sample = torch.full((1, 4, 8), 3)
    skipped, executed = scheduler.timesteps[1], scheduler.timesteps[2]  # t = 2 and t = 1
    g = gen(5)
    out = scheduler.step(logits, skipped, sample, generator=g)
    assert torch.equal(out.prev_sample, sample) and torch.equal(out.pred_original_sample, sample)
    assert torch.equal(g.get_state(), gen(5).get_state())  # nothing drawn
    drawn = scheduler.step(logits, executed, sample, generator=g).prev_sample
    assert not torch.equal(drawn, sample)
    assert not torch.equal(g.get_state(), gen(5).get_state())
    plain = MaskedTokenScheduler()  # the executed step is the plain categorical draw
    plain.set_timesteps(4)
    assert torch.equal(drawn, plain.step(logits, executed, sample, generator=gen(5)).prev_sample)
    assert scheduler.executing(skipped).tolist() == [False]
    assert scheduler.executing(executed).tolist() == [True]
    assert scheduler.step_index == 3


def test_step_skips_per_image_and_takes_the_executing_images_logits():
    """In a batch each image follows its own start; φ_r's logits may cover the batch or only the executing images."""
    scheduler = MaskedTokenScheduler(masking_schedule="linear")
    scheduler.set_timesteps(4)
    trusted = torch.cat([trusting(12), trusting(0), trusting(20)])  # start steps 2, 0, 3
    assert scheduler.set_trusted_mask(trusted).tolist() == [2, 0, 3]
    logits = dummy_logits(batch=3, h=4, w=8)
    sample = torch.randint(0, K, (3, 4, 8), generator=gen(1))
    t = scheduler.timesteps[2]  # images 0 and 1 run, image 2 skips
    assert scheduler.executing(t).tolist() == [True, True, False]
    whole = scheduler.step(logits, t, sample, generator=[gen(1), gen(2), gen(3)])
    only = scheduler.step(logits[:2], t, sample, generator=[gen(1), gen(2), gen(3)])
    assert torch.equal(whole.prev_sample, only.prev_sample)
    assert torch.equal(whole.prev_sample[2], sample[2])
    assert torch.equal(whole.pred_original_sample[:2], logits[:2].argmax(1))
    for b in range(2):  # each executing image draws what it draws alone
        alone = MaskedTokenScheduler()
        alone.set_timesteps(4)
        assert torch.equal(whole.prev_sample[b], alone.step(logits[b : b + 1], t, sample[b : b + 1],
                                                             generator=gen(b + 1)).prev_sample[0])
    with pytest.raises(ValueError, match="does not match"):
        scheduler.step(logits[:1], t, sample)
    with pytest.raises(ValueError, match="set_trusted_mask"):
        scheduler.step(logits[:2], t, sample[:2])
    scheduler.set_timesteps(4)  # a new run forgets the trusted mask: every image runs again
    assert scheduler.start_indices is None and scheduler.step_index is None
    assert scheduler.executing(scheduler.timesteps[0], batch_size=3).tolist() == [True, True, True]


def test_prepare_keep_mask_by_step():
    """B is kept until an image's first executed step; every later step grows it to n_i, drawn from φ_e."""
    scheduler = MaskedTokenScheduler(masking_schedule="linear")
    scheduler.set_timesteps(4)  # N = 32: n = 0, 8, 16, 24
    trusted = torch.cat([trusting(12), trusting(0)])  # start steps 2 and 0
    scheduler.set_trusted_mask(trusted)
    ev = dummy_evaluator_logits(batch=2, h=4, w=8)
    g = [gen(1), gen(2)]
    kept = trusted.clone()
    counts = []
    for i, t in enumerate(scheduler.timesteps):
        before = [x.get_state() for x in g]
        new = scheduler.prepare_keep_mask(kept, t, ev, generator=g)
        drew = [not torch.equal(a, x.get_state()) for a, x in zip(before, g)]
        assert drew == [i > 2, i > 0], i  # only growing images draw
        assert torch.all(new >= kept)
        kept = new
        counts.append(kept.flatten(1).sum(1).int().tolist())
    assert counts == [[12, 0], [12, 8], [12, 16], [24, 24]]
    assert torch.equal(kept[0].view(-1)[:12], torch.ones(12))  # B stays kept
    with pytest.raises(ValueError, match="evaluator_logits"):
        scheduler.prepare_keep_mask(kept, scheduler.timesteps[3], generator=g)
    # a step no image grows at needs no φ_e scores
    assert torch.equal(scheduler.prepare_keep_mask(trusted[:1].expand(2, -1, -1), scheduler.timesteps[0]),
                       trusted[:1].expand(2, -1, -1))


def test_stepper_reproduces_the_official_draws(official_dir):
    """The scheduler alone, fed the official φ_r / φ_e outputs, draws the official tokens and mask (x_40x48)."""
    case = torch.load(official_dir / "tiny_parity.pt", weights_only=True)["x_40x48"]
    lq_tokens = case["lq_tokens"][:, 0]
    scheduler = MaskedTokenScheduler()
    scheduler.set_timesteps(8)
    trusted = scheduler.trusted_mask(case["init_mask_logits"])
    assert torch.equal(trusted, case["init_mask_binary"][:, 0])
    assert scheduler.set_trusted_mask(trusted).tolist() == [case["num_skipped_steps"]] == [4]
    generator = gen(123)
    tokens, kept = lq_tokens.clone(), trusted.clone()
    for i, t in enumerate(scheduler.timesteps[:6]):
        # φ_e's scores of the tokens after step 4 (call 2: calls 0 and 1 judge S_l) grow the mask of step 5
        evaluator_logits = case["crit_logits_per_call"][2] if i == 5 else None
        kept = scheduler.prepare_keep_mask(kept, t, evaluator_logits, generator=generator)
        assert torch.equal(kept, case["eval_refine_masks"][i][:, 0]), i
        if i == 5:
            assert torch.equal(kept, case["sample_t_calls"][0]["mask_out"][:, 0])
            break
        tokens = scheduler.step(case["refine_logits_first"], t, tokens, generator=generator).prev_sample
        assert torch.equal(tokens, lq_tokens if i < 4 else case["categorical_samples"][0][:, 0]), i
        assert torch.equal(tokens, case["refined_tokens"][i][:, 0]), i


def test_step_accepts_the_sequence_form():
    scheduler = MaskedTokenScheduler()
    scheduler.set_timesteps(4)
    logits = torch.randn(2, 16, 5, 7, generator=torch.Generator().manual_seed(0))
    grid = scheduler.step(logits, scheduler.timesteps[0], torch.zeros(2, 5, 7, dtype=torch.long),
                          generator=torch.Generator().manual_seed(3))
    flat = scheduler.step(logits.flatten(2), scheduler.timesteps[0], torch.zeros(2, 35, dtype=torch.long),
                          generator=torch.Generator().manual_seed(3))
    assert flat.prev_sample.shape == (2, 35)
    assert torch.equal(flat.prev_sample, grid.prev_sample.flatten(1))
    assert torch.equal(flat.pred_original_sample, grid.pred_original_sample.flatten(1))
