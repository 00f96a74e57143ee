import dataclasses

import torch

from poseless.models.discriminator import SilhouetteDiscriminator
from poseless.models.mesh_decoder import Generator
from poseless.train.checkpoint import load_model
from poseless.train.gan import TrainGanConfig, train_gan
from poseless.train.metrics_log import read_metrics

TINY = TrainGanConfig(
    iterations=3,
    batch_size=2,
    template_level=1,
    log_every=1,
    checkpoint_every=2,
    progress=False,
)


def random_masks(n=8, size=32):
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        r = int(torch.randint(4, size // 2 - 2, (1,), generator=g))
        c = size // 2
        masks[i, :, c - r : c + r, c - r // 2 : c + r // 2] = 1.0
    return masks


def test_train_gan_runs_and_resumes(tmp_path):
    masks = random_masks()
    result = train_gan(masks, TINY, "cpu", tmp_path)
    assert result.steps == 3 and result.resumed_from is None
    records = read_metrics(result.metrics_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    # D every iteration, G at iterations 0 (and 3, ...): step 1's record has g terms.
    assert {"loss/d", "loss/gp", "loss/g_adv", "loss/g_scale"} <= set(records[0])
    assert "loss/g_adv" not in records[1] and "loss/g_adv" not in records[2]
    assert records[0]["loss/g_scale"] > 0
    G, cfg = load_model(result.generator_path, lambda c: Generator(**c))
    assert cfg["template_level"] == 1
    verts, faces = G(G.sample_z(2))
    assert verts.shape == (2, 42, 3) and verts.abs().max() <= 0.5
    D, _ = load_model(result.discriminator_path, lambda c: SilhouetteDiscriminator(**c))
    assert D(masks[:2]).shape == (2,)
    torch.manual_seed(1)
    fresh = Generator(template_level=1)
    assert not torch.equal(fresh.decoder.fc1.weight, G.decoder.fc1.weight)

    longer = dataclasses.replace(TINY, iterations=4)
    resumed = train_gan(masks, longer, "cpu", tmp_path)
    assert resumed.resumed_from == 3 and resumed.steps == 4
    assert [r["step"] for r in read_metrics(resumed.metrics_path)] == [1, 2, 3, 4]
