"""Top-1 agreement of the default ONNX export with PyTorch on the demo entries (Fashion-MNIST test split).

    python benchmarks/bench_onnx_agreement.py runs/demo    # after `make demo`
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch
from torch.utils.data import DataLoader

import oqatnets
from oqatnets.export import export_onnx
from oqatnets.training.sources import load_image_data


def agreement(run: Path, *, threads: int) -> list[dict]:
    """Each entry of the run's zoo table loaded back from its Hub cache, exported, and both run on the test split."""
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in oqatnets.register_zoo_table(run / 'zoo.json'):
            model = oqatnets.create_model(name, pretrained=True, cache_dir=run / 'hub', local_files_only=True).eval()
            path = export_onnx(model, Path(scratch) / f'{name}.onnx')
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
            data = load_image_data('fashion-mnist', resolution=model.spec.resolution).val
            agree = total = 0
            for x, _ in DataLoader(data, batch_size=500):
                with torch.inference_mode():
                    a = model(x).argmax(1).numpy()
                b = session.run(None, {'input': x.numpy()})[0].argmax(1)
                agree += int((a == b).sum())
                total += len(a)
            rows.append({'entry': name, 'spec': str(model.spec), 'agree': agree, 'images': total,
                         'percent': round(100 * agree / total, 2)})
            print(f'{name}: {agree}/{total} = {100 * agree / total:.2f} %', flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('run', type=Path, help='a finished `oqat demo` run (its zoo.json and hub/ cache)')
    parser.add_argument('--threads', type=int, default=2, help='PyTorch and onnxruntime intra-op threads')
    parser.add_argument('--json', type=Path, default=None, help='also write the rows here')
    args = parser.parse_args()
    if not (args.run / 'zoo.json').is_file():
        parser.error(f'{args.run} holds no zoo.json; pass the --out folder of a finished `oqat demo`')
    torch.set_num_threads(args.threads)
    rows = agreement(args.run, threads=args.threads)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + '\n')


if __name__ == '__main__':
    main()
