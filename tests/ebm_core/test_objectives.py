"""Known answers for every objective: score matching learns a Gaussian's score, NCE its normaliser,
the contrastive and margin objectives rank a mixture's data below uniform noise."""

import math

import pytest
import torch

from ebm_core import LangevinSampler, MLPEnergy, TrainConfig, train_energy
from ebm_core.energies import (
    ClassifierEnergy,
    ClassifierEnergyConfig,
    GaussianEnergy,
    MixtureOfGaussiansEnergy,
    MLPEnergyConfig,
    QuadraticEnergy,
)
from ebm_core.errors import ShapeError
from ebm_core.objectives import (
    ContrastiveDivergence,
    CrossEntropyObjective,
    DenoisingScoreMatching,
    EnergyMarginObjective,
    GaussianNoise,
    JEMHybrid,
    LabelledBatch,
    NoiseContrastiveEstimation,
    PersistentContrastiveDivergence,
    SlicedScoreMatching,
)
from ebm_core.replay_buffer import ReplayBuffer
from ebm_core.samplers import HMCSampler, MALASampler

MEAN = torch.tensor([1.0, -2.0])
COVARIANCE = torch.tensor([[1.0, 0.5], [0.5, 2.0]])
MIXTURE = MixtureOfGaussiansEnergy(torch.tensor([[-2.0, -2.0], [2.0, 2.0], [-2.0, 2.0]]), 0.09 * torch.eye(2))


def mlp(input_dim, hidden=(64, 64), seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MLPEnergy(MLPEnergyConfig(input_dim, hidden))


def classifier(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ClassifierEnergy(ClassifierEnergyConfig(2, 3, (64, 64)))


def gaussian_data(n, generator):
    return MEAN + torch.randn((n, 2), generator=generator) @ torch.linalg.cholesky(COVARIANCE).T


def auroc(in_scores, ood_scores):
    # Mann-Whitney, OOD = positive class; no ties expected with continuous energies
    return float((ood_scores[:, None] > in_scores[None, :]).float().mean())


def data_vs_noise_auroc(energy, generator):
    held_out, _ = MIXTURE.sample(500, generator)
    noise = torch.rand((500, 2), generator=generator) * 8 - 4
    with torch.no_grad():
        return auroc(energy(held_out), energy(noise))


@pytest.mark.parametrize(
    "objective",
    [
        DenoisingScoreMatching(0.1),
        DenoisingScoreMatching((0.05, 0.1, 0.2)),
        SlicedScoreMatching(n_projections=1, projection="rademacher"),
        SlicedScoreMatching(n_projections=1, projection="gaussian", variance_reduction=True),
    ],
    ids=["dsm", "dsm-3-levels", "ssm-rademacher", "ssm-gaussian-vr"],
)
def test_score_matching_learns_the_score_of_a_gaussian(objective):
    generator = torch.Generator().manual_seed(0)
    energy = mlp(2, (32, 32))
    # EMA weights average out the last steps' noise (score matching gradients are noisy near the mode).
    config = TrainConfig(n_steps=300, batch_size=512, learning_rate=3e-3, log_every=100, ema_decay=0.95)
    history = train_energy(energy, objective, gaussian_data(4000, generator), config, generator)

    held_out = gaussian_data(1000, generator).requires_grad_(True)
    (grad,) = torch.autograd.grad(energy(held_out).sum(), held_out)
    true_score = GaussianEnergy(MEAN, COVARIANCE).score(held_out.detach())
    cosine = torch.nn.functional.cosine_similarity(-grad, true_score, dim=1)
    assert float(cosine.mean()) > 0.95
    assert "e_pos" in history.stats and history.steps[-1] == 300


@pytest.mark.parametrize("noise", ["fitted", "given"])
def test_nce_learns_the_log_normaliser_of_a_1d_gaussian(noise):
    mu, sd = 2.0, 0.5
    generator = torch.Generator().manual_seed(0)
    x = mu + sd * torch.randn((4000, 1), generator=generator)
    if noise == "fitted":
        objective = NoiseContrastiveEstimation.fitted_to(x, noise_ratio=4, noise_scale=1.5)
    else:
        objective = NoiseContrastiveEstimation(GaussianNoise(torch.tensor([1.5]), torch.tensor([[1.0]])), noise_ratio=4)
    energy = QuadraticEnergy(1)
    config = TrainConfig(n_steps=300, batch_size=256, learning_rate=2e-2, grad_clip=10.0, log_every=100)
    history = train_energy(energy, objective, x, config, generator)

    learned = float(objective.log_normaliser.detach())
    assert learned == pytest.approx(0.5 * math.log(2 * math.pi * sd**2), abs=0.1)  # the data's normaliser
    assert learned == pytest.approx(float(energy.log_normaliser().detach()), abs=0.1)  # the model's own
    assert history.stats["log_normaliser"][-1] == pytest.approx(learned, abs=0.05)


def test_nce_makes_an_mlp_energy_self_normalised():
    generator = torch.Generator().manual_seed(1)
    x = 2.0 + 0.5 * torch.randn((4000, 1), generator=generator)
    objective = NoiseContrastiveEstimation.fitted_to(x, noise_ratio=4, noise_scale=1.5)
    energy = mlp(1, (32, 32))
    train_energy(energy, objective, x, TrainConfig(n_steps=400, batch_size=256, learning_rate=3e-3), generator)
    grid = torch.linspace(-4.0, 8.0, 12001)[:, None]
    with torch.no_grad():
        log_z = float(torch.logsumexp(-energy(grid), dim=0)) + math.log(float(grid[1] - grid[0]))
    assert float(objective.log_normaliser.detach()) == pytest.approx(log_z, abs=0.1)


def test_cd_k_on_a_mixture_ranks_data_below_uniform_noise():
    generator = torch.Generator().manual_seed(0)
    data, _ = MIXTURE.sample(2000, generator)
    energy = mlp(2)
    objective = ContrastiveDivergence(LangevinSampler(step_size=0.05, n_steps=20), k=5)
    history = train_energy(energy, objective, data, TrainConfig(n_steps=150, learning_rate=3e-3), generator)
    assert data_vs_noise_auroc(energy, generator) > 0.95
    assert history.stats["e_neg"][-1] > history.stats["e_pos"][-1]


def test_jem_learns_to_classify_and_to_rank_data_below_noise():
    generator = torch.Generator().manual_seed(0)
    x, y = MIXTURE.sample(2000, generator)
    energy = classifier()
    buffer = ReplayBuffer(1000, torch.full((2,), -4.0), torch.full((2,), 4.0), 0.05, generator)
    generative = PersistentContrastiveDivergence(LangevinSampler(step_size=0.05, n_steps=5), buffer)
    history = train_energy(
        energy, JEMHybrid(generative), x, TrainConfig(n_steps=150, learning_rate=3e-3), generator, y_train=y
    )
    x_test, y_test = MIXTURE.sample(500, generator)
    with torch.no_grad():
        assert float((energy.logits(x_test).argmax(dim=1) == y_test).float().mean()) > 0.95
    assert data_vs_noise_auroc(energy, generator) > 0.9
    assert {"ce_loss", "train_accuracy", "e_pos", "e_neg", "buffer_mean_age"} <= set(history.stats)


@pytest.mark.parametrize("labelled", [False, True], ids=["label-free", "labelled"])
def test_energy_margin_with_outliers_separates_data_from_noise(labelled):
    generator = torch.Generator().manual_seed(0)
    x, y = MIXTURE.sample(2000, generator)
    outliers = torch.rand((2000, 2), generator=generator) * 8 - 4
    energy = classifier() if labelled else mlp(2)
    objective = EnergyMarginObjective(outliers, m_in=-1.0, m_out=1.0)
    history = train_energy(
        energy, objective, x, TrainConfig(n_steps=150, learning_rate=3e-3), generator,
        y_train=y if labelled else None,
    )
    assert data_vs_noise_auroc(energy, generator) > 0.9
    assert history.stats["e_pos"][-1] < 0.0 < history.stats["e_neg"][-1]
    assert ("ce_loss" in history.stats) == labelled


def test_label_plumbing_errors_say_what_is_wrong():
    generator = torch.Generator().manual_seed(0)
    x, y = MIXTURE.sample(100, generator)
    jem = JEMHybrid(ContrastiveDivergence(LangevinSampler(n_steps=2)))
    config = TrainConfig(n_steps=2)
    with pytest.raises(ValueError, match="y_train"):
        train_energy(classifier(), jem, x, config, generator)
    with pytest.raises(ShapeError, match=r"\(100,\)"):
        train_energy(classifier(), jem, x, config, generator, y_train=y[:50])
    with pytest.raises(ValueError, match="does not use class labels"):
        train_energy(mlp(2), DenoisingScoreMatching(), x, config, generator, y_train=y)
    with pytest.raises(TypeError, match="logits"):
        jem(mlp(2), LabelledBatch(x, y), generator)
    with pytest.raises(ValueError, match="m_in < m_out"):
        EnergyMarginObjective(x, m_in=1.0, m_out=0.0)
    with pytest.raises(ValueError, match="projection"):
        SlicedScoreMatching(projection="sphere")
    with pytest.raises(ValueError, match="sigmas"):
        DenoisingScoreMatching(())
    with pytest.raises(TypeError, match="sample"):
        NoiseContrastiveEstimation(noise=object())
    with pytest.raises(ValueError, match="labelled"):
        CrossEntropyObjective()(classifier(), x, generator)


@pytest.mark.parametrize(
    "make",
    [
        lambda x: DenoisingScoreMatching(0.1),
        lambda x: SlicedScoreMatching(2),
        lambda x: NoiseContrastiveEstimation.fitted_to(x),
        lambda x: ContrastiveDivergence(LangevinSampler(n_steps=3)),
        lambda x: EnergyMarginObjective(x + 5.0),
    ],
    ids=["dsm", "ssm", "nce", "cd", "margin"],
)
def test_objectives_are_deterministic_given_the_generator_and_leave_no_parameter_grads(make):
    x = torch.randn((64, 2), generator=torch.Generator().manual_seed(0))
    energy = mlp(2, (8,))
    losses = [float(make(x)(energy, x, torch.Generator().manual_seed(3)).loss.detach()) for _ in range(2)]
    assert losses[0] == losses[1] and math.isfinite(losses[0])
    assert all(p.grad is None for p in energy.parameters())


def test_contrastive_objectives_report_sampler_telemetry():
    x = torch.randn((32, 2), generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    stats = ContrastiveDivergence(MALASampler(step_size=0.1, n_steps=3))(mlp(2, (8,)), x, generator).stats
    assert 0.0 <= stats["sampler_acceptance"] <= 1.0
    assert {"e_pos", "e_neg", "energy_gap", "sampler_grad_norm"} <= set(stats)
    buffer = ReplayBuffer(64, torch.full((2,), -3.0), torch.full((2,), 3.0), 0.0, generator)
    pcd = PersistentContrastiveDivergence(HMCSampler(step_size=0.1, n_leapfrog=2, n_steps=2), buffer)
    pcd(mlp(2, (8,)), x, generator)
    stats = pcd(mlp(2, (8,)), x, generator).stats
    assert stats["buffer_mean_age"] > 0 and 0.0 <= stats["sampler_acceptance"] <= 1.0


def test_energy_margin_mixes_synthetic_outliers_into_each_batch_at_the_share_asked():
    known = torch.full((3, 2), 100.0)  # a handful of known-bad rows, recognisable by value
    synthetic = torch.full((50, 2), -100.0)
    seen = []

    def energy_fn(batch):
        seen.append(batch.clone())
        return batch.sum(dim=1)

    objective = EnergyMarginObjective(known, outlier_batch_size=8, synthetic=synthetic, synthetic_share=0.25)
    objective(energy_fn, torch.zeros((8, 2)), torch.Generator().manual_seed(0))
    x_out = seen[1]
    assert x_out.shape == (8, 2)
    assert int((x_out[:, 0] == 100.0).sum()) == 6 and int((x_out[:, 0] == -100.0).sum()) == 2
    with pytest.raises(ValueError, match="synthetic_share"):
        EnergyMarginObjective(known, synthetic=synthetic, synthetic_share=1.0)
    with pytest.raises(ValueError, match="needs synthetic"):
        EnergyMarginObjective(known, synthetic_share=0.5)
    with pytest.raises(ValueError, match=r"\(N>0, 2\)"):
        EnergyMarginObjective(known, synthetic=torch.zeros((4, 3)), synthetic_share=0.5)


def test_margin_config_keeps_feature_permuted_rows_beside_known_outliers():
    from ebm_core.objectives import MarginConfig, ObjectiveContext

    generator = torch.Generator().manual_seed(0)
    x = torch.arange(40.0).reshape(20, 2)
    known = torch.full((3, 2), -7.0)
    with_known = MarginConfig().build(ObjectiveContext(x, generator, None, known))
    assert with_known.synthetic_share == 0.5 and with_known.outliers.shape == (3, 2)
    assert sorted(with_known.synthetic.flatten().tolist()) == sorted(x.flatten().tolist())  # permuted rows of x
    alone = MarginConfig(synthetic_share=0.0).build(ObjectiveContext(x, generator, None, known))
    assert alone.synthetic is None
    without = MarginConfig().build(ObjectiveContext(x, generator, None, None))
    assert without.synthetic is None and without.outliers.shape == (20, 2)
    for bad in (1.0, -0.1, "0.5", True):
        with pytest.raises(ValueError, match="synthetic_share"):
            MarginConfig(synthetic_share=bad)


def test_energy_margin_draws_a_known_row_even_when_the_synthetic_share_rounds_to_the_whole_batch():
    seen = []

    def energy_fn(batch):
        seen.append(batch.clone())
        return batch.sum(dim=1)

    known, synthetic = torch.full((3, 2), 100.0), torch.full((5, 2), -100.0)
    EnergyMarginObjective(known, outlier_batch_size=1, synthetic=synthetic, synthetic_share=0.9)(
        energy_fn, torch.zeros((4, 2)), torch.Generator().manual_seed(0)
    )
    assert seen[1].tolist() == [[100.0, 100.0]]
