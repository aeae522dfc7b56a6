"""DCGAN: the reference layout's parameter counts, image sizes it can generate, value ranges and initialisation."""

import pytest
import torch

from modelforge.core.errors import ConfigError
from modelforge.core.registry import build
from modelforge.models.gan import dcgan, upsampling_plan


def test_parameter_counts_match_pytorchs_dcgan_example() -> None:
    model = build("model", "dcgan", latent_dim=100, image_size=64, channels=3, width=64)
    assert sum(p.numel() for p in model.generator.parameters()) == 3_576_704
    assert sum(p.numel() for p in model.discriminator.parameters()) == 2_765_568


@pytest.mark.parametrize(("size", "plan"), [(28, (7, 2)), (32, (4, 3)), (64, (4, 4)), (48, (6, 3))])
def test_upsampling_plan(size: int, plan: tuple[int, int]) -> None:
    assert upsampling_plan(size) == plan


def test_unreachable_image_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="image_size 30 cannot be reached"):
        build("model", "dcgan", image_size=30)


@pytest.mark.parametrize(("size", "channels"), [(28, 1), (32, 3)])
def test_forward_gives_images_in_range_and_one_logit_each(size: int, channels: int) -> None:
    model = build("model", "dcgan", latent_dim=8, image_size=size, channels=channels, width=4).eval()
    with torch.no_grad():
        images, logits = model(model.sample_latent(3))
        assert torch.equal(model.discriminator(images), logits)
    assert images.shape == (3, channels, size, size) and logits.shape == (3,)
    assert images.abs().max() <= 1


def test_sample_latent_follows_the_generator() -> None:
    model = build("model", "dcgan", latent_dim=8, width=4)
    a = model.sample_latent(2, torch.Generator().manual_seed(3))
    b = model.sample_latent(2, torch.Generator().manual_seed(3))
    assert a.shape == (2, 8) and torch.equal(a, b)


def test_weights_start_as_in_the_paper() -> None:
    torch.manual_seed(0)
    model = build("model", "dcgan")
    first = model.generator.net[1].weight  # 100·256·4·4 ≈ 410k draws: the std is pinned down tightly
    assert abs(first.std().item() - 0.02) < 2e-4 and abs(first.mean().item()) < 2e-4
    bn = model.generator.net[2].weight
    assert abs(bn.mean().item() - 1) < 0.01 and bn.std().item() < 0.05


def test_generator_weight_average_follows_the_generator_and_draws_the_samples():
    from modelforge.tasks.vision.image_generation import _sampler

    model = dcgan(latent_dim=8, image_size=28, width=4, ema_decay=0.75)
    assert _sampler(model) is model.generator_ema
    assert not any(p.requires_grad for p in model.generator_ema.parameters())
    before = {name: p.detach().clone() for name, p in model.generator_ema.named_parameters()}
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    model.update_ema()
    for name, p in model.generator_ema.named_parameters():
        current = dict(model.generator.named_parameters())[name]
        torch.testing.assert_close(p, 0.75 * before[name] + 0.25 * current)
    plain = dcgan(latent_dim=8, image_size=28, width=4)
    assert plain.generator_ema is None and _sampler(plain) is plain.generator
    plain.update_ema()  # nothing to average: a no-op
    with pytest.raises(ConfigError, match="ema_decay"):
        dcgan(latent_dim=8, image_size=28, width=4, ema_decay=1.0)


def test_spectral_norm_replaces_the_discriminators_batchnorm():
    model = dcgan(latent_dim=8, image_size=28, width=4, spectral_norm=True)
    convs = [m for m in model.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.discriminator.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.generator.modules())  # the generator keeps it
    model.train()
    for _ in range(20):  # power iteration: the first layer's largest singular value goes to 1
        model.discriminator(torch.randn(4, 1, 28, 28))
    weight = convs[0].weight.detach().reshape(convs[0].weight.shape[0], -1)
    assert abs(float(torch.linalg.matrix_norm(weight, ord=2)) - 1.0) < 0.05
    images, logits = model(torch.randn(3, 8))
    assert images.shape == (3, 1, 28, 28) and logits.shape == (3,)
