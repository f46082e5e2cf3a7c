"""Top-1 agreement of the default ONNX export with PyTorch on the demo entries (Fashion-MNIST test split).

    python benchmarks/bench_onnx_agreement.py runs/demo    # after `make demo`
"""
import sys
from pathlib import Path

import onnxruntime as ort
import torch
from torch.utils.data import DataLoader

import oqatnets
from oqatnets.export import export_onnx
from oqatnets.training.sources import load_image_data

run = Path(sys.argv[1])
oqatnets.register_zoo_table(run / 'zoo.json')
torch.set_num_threads(2)
for bits in (4, 3, 2):
    for size in 'sml':
        name = f'oqat_fmnist_{bits}bit_{size}'
        model = oqatnets.create_model(name, pretrained=True, cache_dir=run / 'hub', local_files_only=True).eval()
        r = model.spec.resolution
        path = export_onnx(model, f'/tmp/{name}.onnx')
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        session = ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
        data = load_image_data('fashion-mnist', resolution=r).val
        agree = total = 0
        for x, _ in DataLoader(data, batch_size=500):
            with torch.no_grad():
                a = model(x).argmax(1).numpy()
            b = session.run(None, {'input': x.numpy()})[0].argmax(1)
            agree += int((a == b).sum())
            total += len(a)
        print(f'{name}: {agree}/{total} = {100 * agree / total:.2f} %', flush=True)
