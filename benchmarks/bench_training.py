"""Throughput and peak memory of one joint-training (sandwich) step.

GPU: the paper's ImageNet space at 224 px (largest) with AMP; CPU: the small space at 32 px.
Prints one JSON object; ``--steps`` timed steps follow ``--warmup`` untimed ones.

    python benchmarks/bench_training.py [--space small|imagenet] [--batch-size N] [--steps N]
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import time

import torch


def main() -> None:
    from oqatnets.supernet import OQATSupernet
    from oqatnets.training.joint import sandwich_specs, sandwich_step
    from oqatnets.training.loop import Amp
    from oqatnets.training.optim import build_optimizer

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
    net.to(device, memory_format=torch.channels_last)  # as train_supernet runs it
    space = net.space
    amp = Amp(device, enabled=not args.no_amp)
    optimizer = build_optimizer(net, lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5)
    res = max(space.resolutions)
    images = torch.randn(args.batch_size, 3, res, res, device=device).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, net.num_classes, (args.batch_size,), device=device)
    rng = random.Random(0)
    times = []
    for i in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        specs = sandwich_specs(space, args.bits, rng, num_random=args.num_random)
        sandwich_step(net, images, target, specs=specs, amp=amp, label_smoothing=0.1, kd_ratio=1.0)
        amp.step(optimizer)
        if cuda:
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    per_step = sum(times) / len(times)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({
        'device': torch.cuda.get_device_name() if cuda else f'cpu ({torch.get_num_threads()} threads)',
        'space': args.space, 'resolution_largest': res, 'bits': args.bits, 'batch_size': args.batch_size,
        'subnets_per_step': 2 + args.num_random, 'amp': amp.enabled and str(amp.dtype),
        'seconds_per_step': round(per_step, 3), 'images_per_s': round(args.batch_size / per_step, 1),
        'subnet_images_per_s': round(args.batch_size * (2 + args.num_random) / per_step, 1),
        'peak_memory_mib': round(peak, 1)}))


if __name__ == '__main__':
    main()
