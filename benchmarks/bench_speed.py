"""Speed of quantization, as ratios against baselines run in the same process (CPU).

1. Eval-mode OQATNet inference vs the same architecture with quantization off (bits=32),
   batch 32 at 220 px, 4 and 2 bits. Target: ≤ 1.3×.
   And a subnet evaluated inside its supernet (what the search and BN calibration run: sliced
   weights, no inference cache), small space at 28 px, batch 250, 2 bits: the eager quantizer
   against the fused one, whose CPU kernel also runs without gradients (the same logits, checked).
2. Supernet sandwich step (largest, smallest, 2 random; forward + backward + SGD step) vs
   - the same step with quantization off (target ≤ 1.15×), with the eager quantizer and with the
     fused one-pass kernels (``oqatnets.quant.set_fused_quantizer``; on the CPU the C kernels of
     ``oqatnets/csrc/``, which training uses by default; their depthwise weight gradient also
     speeds up quantization off, so the fused step is compared with quantization off through the
     same kernel too), and with the fused kernels but every
     activation applied apart instead of absorbed by the next conv's quantizer (``QuantConv2d.conv``'s
     ``act``), which isolates what absorbing them saves,
   - the sum of the four static subnets' steps with the same specs (target ≤ 1.05×),
   - the float Once-for-All supernet (`ofa` package, when installed) on the same specs
     (the authors' quantized step was 1.26× that one).

3. The weight gradient of a depthwise conv (channels-last): oneDNN's against the C kernel of
   ``oqatnets/csrc/depthwise.c`` that fused training uses for 5×5 and 7×7 kernels, per shape.

Every configuration runs in interleaved rounds and the ratio of medians is reported, so a
busy machine slows numerator and denominator alike.

    python benchmarks/bench_speed.py [--quick] [--sandwich-only | --depthwise-only] [--json OUT]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timing import median_times, nothing_absorbed, ofa_supernet  # benchmarks/timing.py (this folder is on sys.path)

import oqatnets
from oqatnets import OQATNet, OQATSupernet, SubnetSpec, get_space
from oqatnets._lsq_kernel import load_kernel

EVAL_SPECS = {  # the 2-bit L and 4-bit L README subnets, both evaluated at 220 px
    2: 'r220_k55533735533557577533_e33346646634644336464_d33443_b2',
    4: 'r220_k53535573377577335537_e44343364344466436466_d24244_b4',
}


def bench_eval(bits: int, *, batch: int, rounds: int) -> dict:
    spec = SubnetSpec.parse(EVAL_SPECS[bits])
    torch.manual_seed(0)
    quant = OQATNet(spec)
    x = torch.randn(batch, 3, spec.resolution, spec.resolution)
    quant(x[:4])  # LSQ step init
    quant.eval()
    fp = copy.deepcopy(quant)
    fp.set_bits(32)

    def run(model):
        def fn():
            with torch.inference_mode():
                model(x)
        return fn

    t = median_times({'quant': run(quant), 'float': run(fp)}, rounds)
    return {'bench': f'eval {bits}-bit', 'batch': batch, 'resolution': spec.resolution,
            'quant_s': t['quant'], 'float_s': t['float'], 'ratio': t['quant'] / t['float'], 'target': 1.3}


def bench_subnet_eval(*, bits: int, batch: int, rounds: int) -> dict:
    torch.manual_seed(0)
    supernet = OQATSupernet(space='small_signed', bits=bits, num_classes=10)
    spec = dataclasses.replace(supernet.space.sample(bits, random.Random(0)), resolution=28)
    x = torch.randn(batch, 3, spec.resolution, spec.resolution)
    supernet.set_active_subnet(spec)
    supernet.train()
    with torch.no_grad():
        supernet(x[:8])  # LSQ step init
    supernet.eval()
    fused = oqatnets.quant.set_fused_quantizer(copy.deepcopy(supernet))

    def run(model):
        def fn():
            with torch.no_grad():
                return model(x)
        return fn

    assert torch.equal(run(supernet)(), run(fused)()), 'the fused quantizer changed the logits'
    t = median_times({'eager': run(supernet), 'fused': run(fused)}, rounds)
    return {'bench': f'subnet eval inside the supernet, {bits}-bit', 'batch': batch, 'resolution': spec.resolution,
            'eager_s': t['eager'], 'fused_s': t['fused'], 'speedup': t['eager'] / t['fused']}


def _sandwich_specs(bits: int, resolution: int) -> list[SubnetSpec]:
    space = get_space('imagenet')
    rng = random.Random(0)
    specs = [space.largest(bits), space.smallest(bits), space.sample(bits, rng), space.sample(bits, rng)]
    return [s.replace(resolution=resolution) for s in specs]


def _step_fn(model: torch.nn.Module, forward_specs: list[Callable[[], torch.Tensor]], opt) -> Callable[[], None]:
    def fn():
        opt.zero_grad(set_to_none=True)
        for forward in forward_specs:
            forward().backward()
        opt.step()
    return fn


def bench_sandwich(*, bits: int, batch: int, resolution: int, rounds: int, channels_last: bool,
                   fused: bool = True) -> dict:
    """``channels_last`` as oqatnets.training runs it (faster conv backward), or PyTorch's default layout."""
    torch.manual_seed(0)
    specs = _sandwich_specs(bits, resolution)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, 3, resolution, resolution).contiguous(memory_format=layout)
    y = torch.randint(0, 1000, (batch,))
    sup = OQATSupernet(bits=bits).train().to(memory_format=layout)
    sup.set_max_subnet()
    sup(x[:4])  # LSQ step init so that every configuration starts from the same weights
    fp_sup = copy.deepcopy(sup)
    fp_sup.set_bits(32)
    start = time.perf_counter()
    fused_sup = oqatnets.quant.set_fused_quantizer(copy.deepcopy(sup))  # builds the kernel once per process
    build_s = time.perf_counter() - start
    fp_fused_sup = oqatnets.quant.set_fused_quantizer(copy.deepcopy(fp_sup))  # the C depthwise weight gradient
    statics = [sup.get_subnet(s).train().to(memory_format=layout) for s in specs]

    def supernet_forward(model, spec):
        def fn():
            model.set_active_subnet(spec.replace(bits=model.bits))
            return F.cross_entropy(model(x), y)
        return fn

    def static_step(net):
        opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
        return _step_fn(net, [lambda: F.cross_entropy(net(x), y)], opt)

    fns = {
        'supernet': _step_fn(sup, [supernet_forward(sup, s) for s in specs],
                             torch.optim.SGD(sup.parameters(), lr=1e-4, momentum=0.9)),
        'supernet_float': _step_fn(fp_sup, [supernet_forward(fp_sup, s) for s in specs],
                                   torch.optim.SGD(fp_sup.parameters(), lr=1e-4, momentum=0.9)),
    }
    if fused:
        fns['supernet_float_fused'] = _step_fn(fp_fused_sup, [supernet_forward(fp_fused_sup, s) for s in specs],
                                               torch.optim.SGD(fp_fused_sup.parameters(), lr=1e-4, momentum=0.9))
        fns['supernet_fused'] = _step_fn(fused_sup, [supernet_forward(fused_sup, s) for s in specs],
                                         torch.optim.SGD(fused_sup.parameters(), lr=1e-4, momentum=0.9))
        apart_sup = copy.deepcopy(fused_sup)
        apart_step = _step_fn(apart_sup, [supernet_forward(apart_sup, s) for s in specs],
                              torch.optim.SGD(apart_sup.parameters(), lr=1e-4, momentum=0.9))

        def apart():
            with nothing_absorbed():
                apart_step()
        fns['supernet_fused_apart'] = apart
    for i, net in enumerate(statics):
        fns[f'static_{i}'] = static_step(net)
    ofa_net = ofa_supernet()
    if ofa_net is not None:
        def ofa_forward(spec):
            def fn():
                ofa_net.set_active_subnet(ks=list(spec.ks), e=list(spec.e), d=list(spec.d))
                return F.cross_entropy(ofa_net(x), y)
            return fn
        ofa_net.to(memory_format=layout)
        fns['ofa_float'] = _step_fn(ofa_net, [ofa_forward(s) for s in specs],
                                    torch.optim.SGD(ofa_net.parameters(), lr=1e-4, momentum=0.9))
    t = median_times(fns, rounds)
    static_sum = sum(t[f'static_{i}'] for i in range(len(statics)))
    result = {'bench': f'sandwich step {bits}-bit, {"channels-last" if channels_last else "NCHW"}',
              'batch': batch, 'resolution': resolution,
              'supernet_s': t['supernet'], 'supernet_float_s': t['supernet_float'], 'static_sum_s': static_sum,
              'ratio_vs_float': t['supernet'] / t['supernet_float'], 'target_vs_float': 1.15,
              'ratio_vs_static': t['supernet'] / static_sum, 'target_vs_static': 1.05}
    if 'supernet_fused' in t:
        result.update(supernet_fused_s=t['supernet_fused'], ratio_fused_vs_float=t['supernet_fused'] / t['supernet_float'],
                      supernet_float_fused_s=t['supernet_float_fused'],
                      ratio_fused_vs_float_fused=t['supernet_fused'] / t['supernet_float_fused'],
                      fused_speedup=t['supernet'] / t['supernet_fused'], build_s=build_s,
                      supernet_fused_apart_s=t['supernet_fused_apart'],
                      ratio_fused_apart_vs_float=t['supernet_fused_apart'] / t['supernet_float'],
                      absorb_speedup=t['supernet_fused_apart'] / t['supernet_fused'])
    if 'ofa_float' in t:
        result.update(ofa_float_s=t['ofa_float'], ratio_vs_ofa=t['supernet'] / t['ofa_float'])
    return result


# (batch, channels, size, kernel, stride): the demo's space at batch 32 (28 px largest) and the ImageNet space's
DEPTHWISE_SHAPES = [(32, 384, 4, 7, 1), (32, 96, 14, 7, 1), (32, 144, 7, 7, 1), (32, 96, 28, 7, 2), (32, 384, 4, 5, 1),
                    (32, 384, 4, 3, 1), (8, 144, 56, 7, 1), (8, 96, 112, 7, 2), (8, 960, 7, 7, 1)]


def bench_depthwise(*, rounds: int) -> list[dict]:
    """The weight gradient of a depthwise conv in channels-last: oneDNN's (what autograd runs) against the C
    kernel the fused quantizer's training uses for 5×5 and 7×7 kernels."""
    return [_depthwise_row(*shape, rounds=rounds) for shape in DEPTHWISE_SHAPES]


def _depthwise_row(n: int, c: int, size: int, k: int, stride: int, *, rounds: int) -> dict:
    kernel = load_kernel()
    torch.manual_seed(0)
    x = torch.randn(n, c, size, size).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, 1, k, k).contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(F.conv2d(x, w, None, stride, k // 2, 1, c))
    t = median_times({
        'onednn': lambda: torch.ops.aten.convolution_backward(g, x, w, None, [stride] * 2, [k // 2] * 2, [1, 1],
                                                              False, [0, 0], c, [False, True, False]),
        'kernel': lambda: kernel.depthwise_weight_grad(x, g, k, stride=stride, padding=k // 2),
    }, rounds)
    return {'bench': 'depthwise weight gradient', 'shape': [n, c, size, size], 'kernel': k, 'stride': stride,
            'onednn_s': t['onednn'], 'kernel_s': t['kernel'], 'speedup': t['onednn'] / t['kernel']}


def markdown(results: list[dict]) -> str:
    lines = ['| benchmark | setting | ours (s) | baseline (s) | ratio | target |', '|---|---|---|---|---|---|']
    for r in results:
        if r['bench'] == 'depthwise weight gradient':
            lines.append(f"| {r['bench']}, oneDNN / C kernel | {'×'.join(map(str, r['shape']))}, {r['kernel']}×{r['kernel']}, "
                         f"stride {r['stride']} | {r['onednn_s']:.5f} | {r['kernel_s']:.5f} | {r['speedup']:.2f}× faster "
                         "kernel | |")
            continue
        setting = f"batch {r['batch']}, {r['resolution']} px"
        if r['bench'].startswith('subnet eval'):
            lines.append(f"| {r['bench']}, eager / fused quantizer | {setting} | {r['eager_s']:.3f} | {r['fused_s']:.3f} | "
                         f"{r['speedup']:.2f}× faster fused | |")
            continue
        if r['bench'].startswith('eval'):
            lines.append(f"| {r['bench']} vs float | {setting} | {r['quant_s']:.3f} | {r['float_s']:.3f} | "
                         f"{r['ratio']:.2f}× | ≤ {r['target']}× |")
            continue
        lines.append(f"| {r['bench']}, eager quantizer, vs quantization off | {setting} | {r['supernet_s']:.3f} | "
                     f"{r['supernet_float_s']:.3f} | {r['ratio_vs_float']:.2f}× | ≤ {r['target_vs_float']}× |")
        if 'supernet_fused_s' in r:
            lines.append(f"| {r['bench']}, fused quantizer, vs quantization off | {setting} | "
                         f"{r['supernet_fused_s']:.3f} | {r['supernet_float_s']:.3f} | {r['ratio_fused_vs_float']:.2f}× | "
                         f"≤ {r['target_vs_float']}× (building: {r['build_s']:.1f} s once) |")
            lines.append(f"| {r['bench']}, fused quantizer, vs quantization off with the same depthwise kernel | "
                         f"{setting} | {r['supernet_fused_s']:.3f} | {r['supernet_float_fused_s']:.3f} | "
                         f"{r['ratio_fused_vs_float_fused']:.2f}× | ≤ {r['target_vs_float']}× |")
            lines.append(f"| {r['bench']}, eager / fused quantizer | {setting} | {r['supernet_s']:.3f} | "
                         f"{r['supernet_fused_s']:.3f} | {r['fused_speedup']:.2f}× faster fused | |")
            lines.append(f"| {r['bench']}, fused, activations apart / absorbed | {setting} | "
                         f"{r['supernet_fused_apart_s']:.3f} | {r['supernet_fused_s']:.3f} | "
                         f"{r['absorb_speedup']:.2f}× faster absorbed (apart: {r['ratio_fused_apart_vs_float']:.2f}× "
                         "quantization off) | |")
        lines.append(f"| {r['bench']} vs 4 static subnets | {setting} | {r['supernet_s']:.3f} | "
                     f"{r['static_sum_s']:.3f} | {r['ratio_vs_static']:.2f}× | ≤ {r['target_vs_static']}× |")
        if 'ofa_float_s' in r:
            lines.append(f"| {r['bench']} vs OFA float supernet | {setting} | {r['supernet_s']:.3f} | "
                         f"{r['ofa_float_s']:.3f} | {r['ratio_vs_ofa']:.2f}× | (authors: 1.26×) |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer rounds and a smaller sandwich batch')
    parser.add_argument('--json', help='also write the results as JSON to this file')
    parser.add_argument('--no-fused', action='store_true', help='skip the fused-quantizer rows')
    parser.add_argument('--sandwich-only', action='store_true', help='only the sandwich-step benchmarks')
    parser.add_argument('--depthwise-only', action='store_true', help='only the depthwise weight-gradient benchmark')
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 5
    if args.depthwise_only:
        results = bench_depthwise(rounds=4 * rounds)
    else:
        results = [] if args.sandwich_only else [bench_eval(bits, batch=32, rounds=rounds) for bits in (4, 2)]
        if not (args.sandwich_only or args.no_fused):
            results += bench_depthwise(rounds=4 * rounds)
            results.append(bench_subnet_eval(bits=2, batch=250, rounds=3 * rounds))
        for channels_last in ((True,) if args.quick else (True, False)):
            results.append(bench_sandwich(bits=4, batch=8 if args.quick else 16, resolution=160, rounds=rounds,
                                          channels_last=channels_last, fused=not args.no_fused))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, oqatnets {oqatnets.__version__}')
    print(markdown(results))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == '__main__':
    main()
