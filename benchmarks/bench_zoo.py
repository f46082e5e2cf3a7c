"""Zoo benchmark: warm-cache load time of oqat_2bit_m, and packed vs fp32 safetensors sizes.

Weights are random-initialised (step sizes set by one forward), saved with
``oqatnets.save_pretrained`` and published into a temporary Hugging Face cache with
``oqatnets.publish_to_cache``; loading goes through the real ``hf_hub_download`` path offline.

    .venv/bin/python benchmarks/bench_zoo.py [--repeats 10]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import torch

import oqatnets

SML = [f'oqat_{b}bit_{s}' for b in (2, 3, 4) for s in ('s', 'm', 'l')]


def _initialised(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = oqatnets.create_model(name)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    return model.eval()


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=10)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / 'hub'
        rows = []
        for name in SML:
            folder = oqatnets.save_pretrained(_initialised(name), Path(tmp) / name)
            cfg = oqatnets.get_pretrained_cfg(name)
            oqatnets.publish_to_cache(folder, cfg.hf_hub_id, cache_dir=cache)
            fp32 = (folder / 'model.safetensors').stat().st_size
            packed = (folder / 'model.packed.safetensors').stat().st_size
            rows.append((name, cfg.architecture, cfg.profile['size_mbit'] * 1e6 / 8, fp32, packed))
        oqatnets.create_model('oqat_2bit_m', pretrained=True, cache_dir=cache)  # warm up the process
        load = _median_seconds(lambda: oqatnets.create_model('oqat_2bit_m', pretrained=True, cache_dir=cache),
                               args.repeats)
        build = _median_seconds(lambda: oqatnets.create_model('oqat_2bit_m'), args.repeats)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, python {sys.version.split()[0]}\n')
    print(f'| measurement | median of {args.repeats} |')
    print('|---|---|')
    print(f'| load oqat_2bit_m (pretrained=True, warm Hub cache, offline) | {load * 1e3:.1f} ms |')
    print(f'| build oqat_2bit_m without weights | {build * 1e3:.1f} ms |')
    print(f'| ratio load / build | {load / build:.2f} |\n')
    print('| name | model | profile size (kB) | fp32 safetensors (kB) | packed (kB) | packed / profile | fp32 / packed |')
    print('|---|---|---|---|---|---|---|')
    for name, arch, expected, fp32, packed in rows:
        print(f'| {name} | {arch} | {expected / 1e3:.1f} | {fp32 / 1e3:.1f} | {packed / 1e3:.1f} | '
              f'{packed / expected:.3f} | {fp32 / packed:.2f}x |')


if __name__ == '__main__':
    main()
