"""Deployed speed: onnxruntime and PyTorch, quantized vs float, batch 1 and 32, per bit-width (CPU).

For the M entry of each bit-width (``oqat_{2,3,4}bit_m``, random weights with BN statistics
measured on random inputs; speed does not depend on the values) it times, in interleaved rounds
in one process (ratio of medians, so a busy machine slows numerator and denominator alike):

- onnxruntime, one intra-op thread, otherwise default session options: the float graph (the
  same network with quantization off, exported by the same code: Conv with BN folded,
  HardSwish, float SE, Gemm) vs our fast exact export (``--format onnx``; INT8 and INT4 weight codes) and
  the QCDQ export (``--format qcdq``);
- two bounds, not exports: the fast export with the second of its two rounding passes per quantizer
  removed (``one_pass``: a depthwise conv and a fused Clip, what any graph that rounds outside the
  convolutions must at least run: onnxruntime has no rounding it fuses into a conv) and with both removed
  (``no_pass``: the convolutions alone). Their values are wrong; their times bound what a graph of
  standard onnxruntime operators can reach;
- PyTorch eval (``torch.inference_mode``, one thread): quantized vs ``set_bits(32)``;

and reports the ONNX file sizes and the top-1 agreement of each ONNX file with the PyTorch
fake-quant model on random inputs. Targets: fast export ≤ 1.3× float.

With ``--fmnist-steps N`` (default 400; 0 skips it) it also trains a small-space subnet per
bit-width on Fashion-MNIST for N SGD steps (batch 64, 32 px) and reports the top-1 agreement of
its fast export with PyTorch on the 10 000 test images: a trained network, unlike a random one,
has logit margins well above float rounding noise.

    python benchmarks/bench_deploy.py [--quick] [--fmnist-steps N] [--json OUT]
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import median_times  # benchmarks/timing.py (this folder is on sys.path)

import oqatnets
from oqatnets.export import export_onnx

ENTRIES = {2: 'oqat_2bit_m', 3: 'oqat_3bit_m', 4: 'oqat_4bit_m'}
FORMS = ('float', 'onnx', 'onnx_int4', 'qcdq')
# Bounds: the fast export without some of its nodes (names as oqatnets.export._round_clip_dw gives them).
BOUNDS = {'one_pass': r'_unround_\d+$', 'no_pass': r'_(un)?round_\d+$|_clip_\d+$'}


def _model(name: str) -> oqatnets.OQATNet:
    """``name``'s architecture with random weights, LSQ steps and BN statistics from random inputs."""
    torch.manual_seed(0)
    model = oqatnets.create_model(name)
    r = model.spec.resolution
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, r, r))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model(torch.randn(16, 3, r, r))
    return model.eval()


def _random_images(n: int, r: int) -> torch.Tensor:
    """Noise images with a random contrast and per-channel offset each, so predictions vary."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, r, r, generator=g) * torch.rand(n, 1, 1, 1, generator=g) * 2 + torch.randn(n, 3, 1, 1, generator=g)


def _without_nodes(path: Path, out: Path, pattern: str) -> Path:
    """The ONNX file ``path`` without the nodes whose names match ``pattern``, each one's output replaced by
    its first input: a graph that runs fewer passes than ``path``, not one that computes its values."""
    import onnx
    model = onnx.load(str(path))
    dropped = {n.output[0]: n.input[0] for n in model.graph.node if re.search(pattern, n.name)}
    kept = [n for n in model.graph.node if n.output[0] not in dropped]
    for node in kept:
        for i, name in enumerate(node.input):
            while name in dropped:
                name = dropped[name]
            node.input[i] = name
    del model.graph.node[:]
    model.graph.node.extend(kept)
    onnx.save(model, str(out))
    return out


def bench_bits(bits: int, *, out: Path, rounds: dict[int, int], agreement_images: int) -> dict:
    import onnxruntime as ort
    model = _model(ENTRIES[bits])
    r = model.spec.resolution
    fp = copy.deepcopy(model)
    fp.set_bits(32)
    paths = {'float': export_onnx(fp, out / f'{bits}_float.onnx'),
             'onnx': export_onnx(model, out / f'{bits}_onnx.onnx'),
             'onnx_int4': export_onnx(model, out / f'{bits}_onnx_int4.onnx', int4=True),
             'qcdq': export_onnx(model, out / f'{bits}_qcdq.onnx', format='qcdq')}
    paths.update({k: _without_nodes(paths['onnx'], out / f'{bits}_{k}.onnx', pattern) for k, pattern in BOUNDS.items()})
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sessions = {k: ort.InferenceSession(str(p), options, providers=['CPUExecutionProvider']) for k, p in paths.items()}
    result: dict = {'bits': bits, 'entry': ENTRIES[bits], 'spec': str(model.spec), 'resolution': r,
                    'size_mb': {k: p.stat().st_size / 1e6 for k, p in paths.items()}}
    x = _random_images(agreement_images, r)
    with torch.inference_mode():
        expected = model(x).argmax(1).numpy()
    result['top1_agreement'] = {k: float((sessions[k].run(None, {'input': x.numpy()})[0].argmax(1) == expected).mean())
                                for k in FORMS if k != 'float'}
    for batch, n in rounds.items():
        xb = np.random.default_rng(batch).standard_normal((batch, 3, r, r), dtype=np.float32)
        tb = torch.from_numpy(xb)

        def ort_run(s, xb=xb):
            return lambda: s.run(None, {'input': xb})

        def torch_run(m, tb=tb):
            def fn():
                with torch.inference_mode():
                    m(tb)
            return fn

        fns = {f'ort_{k}': ort_run(s) for k, s in sessions.items()}
        fns.update(torch_quant=torch_run(model), torch_float=torch_run(fp))
        t = median_times(fns, n)
        result[f'batch{batch}'] = {'seconds': t, 'ratio': {
            **{k: t[f'ort_{k}'] / t['ort_float'] for k in (*FORMS, *BOUNDS) if k != 'float'},
            'torch': t['torch_quant'] / t['torch_float'], 'torch_float_vs_ort_float': t['torch_float'] / t['ort_float']}}
    return result


FMNIST_SPEC = 'r32_k33335555333333335555_e43333333633366666666_d23423_b{bits}'  # MobileNetV3-L-like


def fmnist_agreement(bits: int, *, steps: int, out: Path) -> dict:
    """Train a small-space subnet briefly on Fashion-MNIST; top-1 of PyTorch and of ORT on the test split."""
    import onnxruntime as ort

    from oqatnets.data import load_image_data
    data = load_image_data('fashion-mnist')
    torch.manual_seed(bits)
    model = oqatnets.OQATNet(FMNIST_SPEC.format(bits=bits), space='small', num_classes=data.num_classes)
    model = model.train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps)
    loader = torch.utils.data.DataLoader(data.train, batch_size=64, shuffle=True, drop_last=True)
    batches = iter(loader)
    for _ in range(steps):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y).backward()
        opt.step()
        sched.step()
    model = model.eval().to(memory_format=torch.contiguous_format)
    path = export_onnx(model, out / f'fmnist_{bits}.onnx')
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    agree = correct_torch = correct_ort = 0
    for x, y in torch.utils.data.DataLoader(data.val, batch_size=500):
        with torch.inference_mode():
            pt = model(x).argmax(1)
        ox = torch.from_numpy(session.run(None, {'input': x.numpy()})[0]).argmax(1)
        agree += int((pt == ox).sum())
        correct_torch += int((pt == y).sum())
        correct_ort += int((ox == y).sum())
    n = len(data.val)
    return {'bits': bits, 'steps': steps, 'images': n, 'top1_agreement': agree / n,
            'top1_torch': correct_torch / n, 'top1_ort': correct_ort / n}


def markdown(results: list[dict]) -> str:
    lines = ['| bits (entry, px) | batch | ORT float (ms) | ORT onnx int8 | ORT onnx int4 | ORT qcdq | '
             'bound: one pass / none | PyTorch quant / float | PyTorch float / ORT float |',
             '|---|---|---|---|---|---|---|---|---|']
    for res in results:
        for batch in (1, 32):
            b = res.get(f'batch{batch}')
            if b is None:
                continue
            q = b['ratio']
            lines.append(f"| {res['bits']} ({res['entry']}, {res['resolution']}) | {batch} | "
                         f"{b['seconds']['ort_float'] * 1e3:.1f} | **{q['onnx']:.2f}×** | {q['onnx_int4']:.2f}× | "
                         f"{q['qcdq']:.2f}× | {q['one_pass']:.2f}× / {q['no_pass']:.2f}× | {q['torch']:.2f}× | "
                         f"{q['torch_float_vs_ort_float']:.2f}× |")
    lines += ['', '| bits | float .onnx (MB) | onnx int8 (MB) | onnx int4 (MB) | qcdq (MB) | '
              'top-1 agreement with PyTorch, random inputs: onnx / int4 / qcdq |', '|---|---|---|---|---|---|']
    for res in results:
        s, a = res['size_mb'], res['top1_agreement']
        lines.append(f"| {res['bits']} | {s['float']:.2f} | {s['onnx']:.2f} | {s['onnx_int4']:.2f} | {s['qcdq']:.2f} | "
                     f"{a['onnx']:.1%} / {a['onnx_int4']:.1%} / {a['qcdq']:.1%} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help='fewer rounds and agreement images')
    parser.add_argument('--fmnist-steps', type=int, default=400, help='training steps of the Fashion-MNIST check (0: skip)')
    parser.add_argument('--skip-speed', action='store_true', help='only the Fashion-MNIST agreement check')
    parser.add_argument('--json', help='also write the results as JSON to this file')
    args = parser.parse_args(argv)
    import onnxruntime as ort
    torch.set_num_threads(1)
    rounds = {1: 10, 32: 2} if args.quick else {1: 40, 32: 9}
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_speed:
            results = [bench_bits(bits, out=Path(tmp), rounds=rounds, agreement_images=32 if args.quick else 256)
                       for bits in ENTRIES]
        fmnist = [fmnist_agreement(bits, steps=args.fmnist_steps, out=Path(tmp)) for bits in ENTRIES] \
            if args.fmnist_steps > 0 else []
    print(f'torch {torch.__version__}, onnxruntime {ort.__version__}, 1 thread each, oqatnets {oqatnets.__version__}')
    if results:
        print(markdown(results))
    if fmnist:
        print(f'\nFashion-MNIST test split, `{FMNIST_SPEC}` trained {args.fmnist_steps} steps:\n')
        print('| bits | top-1 PyTorch | top-1 ORT (fast export) | top-1 agreement |\n|---|---|---|---|')
        for r in fmnist:
            print(f"| {r['bits']} | {r['top1_torch']:.2%} | {r['top1_ort']:.2%} | **{r['top1_agreement']:.2%}** "
                  f"({round((1 - r['top1_agreement']) * r['images'])} of {r['images']} differ) |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'speed': results, 'fmnist': fmnist}, f, indent=1)
    return results + fmnist


if __name__ == '__main__':
    main()
