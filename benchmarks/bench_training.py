"""Throughput and peak memory of one joint-training (sandwich) step, eager and fused quantizer.

GPU: the paper's ImageNet space at 224 px (largest) with AMP; CPU: the small space at 32 px.
The same supernet trains through the eager LSQ quantizer, through the fused kernels
(``set_fused_quantizer``; training's default on the CPU), and through the fused kernels with every
activation applied apart instead of absorbed by the next conv's quantizer (``fused_apart``), steps
interleaved so machine noise hits all alike. Prints one JSON object; ``--steps`` timed steps follow ``--warmup`` untimed ones.

    python benchmarks/bench_training.py [--space small|imagenet] [--batch-size N] [--steps N]
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import resource
import time
from contextlib import nullcontext

import torch
from timing import nothing_absorbed  # benchmarks/timing.py (this folder is on sys.path)

from oqatnets.quant import set_fused_quantizer
from oqatnets.supernet import OQATSupernet
from oqatnets.training.joint import sandwich_specs, sandwich_step
from oqatnets.training.loop import Amp
from oqatnets.training.optim import build_optimizer


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--space', default='imagenet' if cuda else 'small')
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--bits', type=int, default=4)
    parser.add_argument('--num-random', type=int, default=2)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--no-amp', action='store_true')
    args = parser.parse_args()

    device = torch.device('cuda' if cuda else 'cpu')
    torch.manual_seed(0)
    net = OQATSupernet(space=args.space, bits=args.bits, num_classes=1000 if args.space == 'imagenet' else 10)
    net.to(device, memory_format=torch.channels_last).train()  # as train_supernet runs it
    space = net.space
    amp = Amp(device, enabled=not args.no_amp)
    res = max(space.resolutions)
    images = torch.randn(args.batch_size, 3, res, res, device=device).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, net.num_classes, (args.batch_size,), device=device)
    net(images[:4])  # LSQ step init, so that both copies start from the same weights
    nets = {'eager': net, 'fused': set_fused_quantizer(copy.deepcopy(net))}
    nets['fused_apart'] = copy.deepcopy(nets['fused'])
    optimizers = {name: build_optimizer(m, lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5)
                  for name, m in nets.items()}
    rngs = {name: random.Random(0) for name in nets}  # the same subnets in both
    times: dict[str, list[float]] = {name: [] for name in nets}
    for i in range(args.warmup + args.steps):
        for name, model in nets.items():
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            optimizers[name].zero_grad(set_to_none=True)
            specs = sandwich_specs(space, args.bits, rngs[name], num_random=args.num_random)
            with nothing_absorbed() if name == 'fused_apart' else nullcontext():
                sandwich_step(model, images, target, specs=specs, amp=amp, label_smoothing=0.1, kd_ratio=1.0)
            amp.step(optimizers[name])
            if cuda:
                torch.cuda.synchronize()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    per_step = {name: sum(t) / len(t) for name, t in times.items()}
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({
        'device': torch.cuda.get_device_name() if cuda else f'cpu ({torch.get_num_threads()} threads)',
        'space': args.space, 'resolution_largest': res, 'bits': args.bits, 'batch_size': args.batch_size,
        'subnets_per_step': 2 + args.num_random, 'amp': amp.enabled and str(amp.dtype),
        **{f'seconds_per_step_{name}': round(t, 3) for name, t in per_step.items()},
        'fused_speedup': round(per_step['eager'] / per_step['fused'], 3),
        'absorb_speedup': round(per_step['fused_apart'] / per_step['fused'], 3),
        'images_per_s_fused': round(args.batch_size / per_step['fused'], 1),
        'subnet_images_per_s_fused': round(args.batch_size * (2 + args.num_random) / per_step['fused'], 1),
        'peak_memory_mib_both': round(peak, 1)}))


if __name__ == '__main__':
    main()
