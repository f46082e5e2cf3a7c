"""Throughput and peak memory of one joint-training (sandwich) step, eager and fused quantizer, against float.

GPU: the paper's ImageNet space at 224 px (largest) with AMP; CPU: the small space at 32 px.
The same supernet trains through the eager LSQ quantizer, through the fused kernels
(``set_fused_quantizer``; training's default on the CPU), and through the fused kernels with every
activation applied apart instead of absorbed by the next conv's quantizer (``fused_apart``) and, on
the CPU, with oneDNN's depthwise weight gradient instead of the C kernel's (``fused_onednn_depthwise``). The
baselines take the same subnets through the same ``sandwich_step``: the supernet with quantization
off (``float``; on the CPU also ``float_fused``, quantization off with the fused model's C kernel for
the weight gradient of 5×5 and 7×7 depthwise convs, so that ``ratio_fused_vs_float_fused`` is the
quantizer's own cost) and, in the ImageNet space when the ``ofa`` package is installed, the authors'
float Once-for-All supernet (``ofa_float``). Steps are interleaved so machine noise hits all alike;
on CUDA an untimed float step first meets each step's new conv shapes, whose cuDNN plans take seconds.
Prints one JSON object; ``--steps`` timed steps follow ``--warmup`` untimed ones.

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
from timing import nothing_absorbed, ofa_supernet, onednn_depthwise  # benchmarks/timing.py (this folder is on sys.path)
from torch import nn

from oqatnets.quant import set_bits, set_fused_quantizer
from oqatnets.spec import SubnetSpec
from oqatnets.supernet import OQATSupernet
from oqatnets.training.joint import sandwich_specs, sandwich_step
from oqatnets.training.loop import Amp
from oqatnets.training.optim import build_optimizer


class OFAAdapter(nn.Module):
    """The ``ofa`` supernet behind our ``set_active_subnet(spec)``, so ``sandwich_step`` trains it unchanged."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def set_active_subnet(self, spec: SubnetSpec) -> None:
        self.net.set_active_subnet(ks=list(spec.ks), e=list(spec.e), d=list(spec.d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--space', default='imagenet' if cuda else 'small')
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--bits', type=int, default=4)
    parser.add_argument('--num-random', type=int, default=2)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=3, help='untimed steps each (the fused kernels compile off the CPU)')
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
    nets: dict[str, nn.Module] = {'eager': net, 'fused': set_fused_quantizer(copy.deepcopy(net))}
    nets['fused_apart'] = copy.deepcopy(nets['fused'])
    nets['float'] = set_bits(copy.deepcopy(net), 32)
    if not cuda:  # the C depthwise weight gradient left out, and quantization off through it
        nets['fused_onednn_depthwise'] = copy.deepcopy(nets['fused'])
        nets['float_fused'] = set_fused_quantizer(set_bits(copy.deepcopy(net), 32))
    ofa = ofa_supernet() if args.space == 'imagenet' else None
    if ofa is not None:
        nets['ofa_float'] = OFAAdapter(ofa).to(device, memory_format=torch.channels_last)
    optimizers = {name: build_optimizer(m, lr=0.1, momentum=0.9, nesterov=True, weight_decay=4e-5)
                  for name, m in nets.items()}
    rng = random.Random(0)
    times: dict[str, list[float]] = {name: [] for name in nets}
    for i in range(args.warmup + args.steps):
        specs = sandwich_specs(space, args.bits, rng, num_random=args.num_random)  # the same subnets for all
        float_specs = [s.replace(bits=32) for s in specs]
        if cuda:  # cuDNN builds a plan per new conv shape (seconds a step): warm them all outside the timings
            sandwich_step(nets['float'], images, target, specs=float_specs, amp=amp, label_smoothing=0.1, kd_ratio=1.0)
        for name, model in nets.items():
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            optimizers[name].zero_grad(set_to_none=True)
            with (nothing_absorbed() if name == 'fused_apart' else
                  onednn_depthwise() if name == 'fused_onednn_depthwise' else nullcontext()):
                sandwich_step(model, images, target, specs=float_specs if name.startswith('float') else specs,
                              amp=amp, label_smoothing=0.1, kd_ratio=1.0)
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
        'ratio_eager_vs_float': round(per_step['eager'] / per_step['float'], 3),
        'ratio_fused_vs_float': round(per_step['fused'] / per_step['float'], 3),
        **({'ratio_fused_vs_float_fused': round(per_step['fused'] / per_step['float_fused'], 3),
            'depthwise_kernel_speedup': round(per_step['fused_onednn_depthwise'] / per_step['fused'], 3),
            'depthwise_kernel_speedup_float': round(per_step['float'] / per_step['float_fused'], 3)}
           if 'float_fused' in per_step else {}),
        **({'ratio_fused_vs_ofa_float': round(per_step['fused'] / per_step['ofa_float'], 3),
            'ratio_eager_vs_ofa_float': round(per_step['eager'] / per_step['ofa_float'], 3)} if 'ofa_float' in per_step else {}),
        'absorb_speedup': round(per_step['fused_apart'] / per_step['fused'], 3),
        'images_per_s_fused': round(args.batch_size / per_step['fused'], 1),
        'subnet_images_per_s_fused': round(args.batch_size * (2 + args.num_random) / per_step['fused'], 1),
        'peak_memory_mib_all': round(peak, 1)}))


if __name__ == '__main__':
    main()
