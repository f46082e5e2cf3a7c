"""Tiny spaces, synthetic data and a training-run script shared by the training tests."""
from __future__ import annotations

import torch

from oqatnets.data import TensorImageDataset
from oqatnets.spec import SearchSpace

# A few thousand parameters: steps take milliseconds, every elastic dimension is still there.
TINY_SPACE = SearchSpace(name='tiny', stem_channels=8, stem_stride=1, first_block_channels=8,
                         stage_channels=(8, 8, 16, 16, 16), stage_strides=(2, 2, 2, 1, 1),
                         final_expand_channels=32, head_channels=32, resolutions=(16, 20, 24))


def synthetic_dataset(num_images: int = 96, *, num_classes: int = 4, size: int = 24, train: bool = True,
                      seed: int = 0) -> TensorImageDataset:
    """Class-dependent blobs on noise: learnable, so losses move, but no download."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_images) % num_classes
    images = torch.randint(0, 60, (num_images, size, size), generator=g)
    for c in range(num_classes):
        r, col = divmod(c, 2)
        images[labels == c, r * 12:r * 12 + 10, col * 12:col * 12 + 10] += 150
    return TensorImageDataset(images.clamp(0, 255).to(torch.uint8), labels, mean=0.3, std=0.3, size=size,
                              train=train)


# Runs a short joint training of the tiny supernet; argv: OUT_DIR RESUME(0/1) [STATE_OUT].
RUN_SCRIPT = '''
import sys, torch
sys.path.insert(0, {tests_dir!r})
from training_helpers import TINY_SPACE, synthetic_dataset
from oqatnets.supernet import OQATSupernet
from oqatnets.training import get_recipe, init_distributed, train_supernet
torch.manual_seed(0)
torch.set_num_threads(1)  # tiny convs gain nothing from threads; spinning ones suffer under load
out, resume = sys.argv[1], sys.argv[2] == '1'
ctx = init_distributed(device='cpu')
net = OQATSupernet(space=TINY_SPACE, bits=4, num_classes=4)
recipe = get_recipe('small').override(batch_size={batch_size}, lr=0.05, warmup_epochs=0.5, num_random_subnets=2)
train_supernet(supernet=net, train_set=synthetic_dataset(), recipe=recipe, bits=4, epochs={epochs},
               float_epochs={float_epochs}, out_dir=out, ctx=ctx, resume=resume, seed=3,
               checkpoint_every={checkpoint_every}, log_every=1000)
if len(sys.argv) > 3:
    torch.save({{k: v.detach().clone() for k, v in net.state_dict().items()}}, sys.argv[3] + f'.rank{{ctx.rank}}')
'''


def run_script(tests_dir: str, *, epochs: int = 2, float_epochs: int = 1, batch_size: int = 16,
               checkpoint_every: int = 2) -> str:
    return RUN_SCRIPT.format(tests_dir=tests_dir, epochs=epochs, float_epochs=float_epochs, batch_size=batch_size,
                             checkpoint_every=checkpoint_every)
