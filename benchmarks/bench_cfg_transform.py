"""Does a card's top-1 hold for a user who feeds image files through the entry's cfg transform?

    python benchmarks/bench_cfg_transform.py --demo-dir runs/demo     # after `make demo`: every entry
    python benchmarks/bench_cfg_transform.py --train                  # one subnet per resolution, trained alone

For each model: test top-1 on the in-memory Fashion-MNIST test split as the package measures it
(images as stored, batches resized by ``resize_batch``), and on the same images as PIL images through
(a) the cfg's own transform (``oqatnets.data.eval_transform`` of the cfg fields: what ``oqat predict``
and ``oqat eval`` on a folder do) and (b) timm's ``create_transform(**resolve_data_config(model=m))``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import timm.data
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

import oqatnets
from oqatnets.data import eval_transform
from oqatnets.evaluation import evaluate, recalibrate_bn
from oqatnets.training.distributed import init_distributed
from oqatnets.training.finetune import finetune
from oqatnets.training.recipes import get_recipe
from oqatnets.training.sources import load_image_data


class FilesView(Dataset):
    """The in-memory grey images as RGB PIL images (a PNG of them read as timm's and our loaders read files),
    through ``transform``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index].numpy()).convert('RGB')), int(self.labels[index])


def top1_three_ways(model: torch.nn.Module, test) -> dict[str, float]:
    cfg = model.pretrained_cfg
    r = int(cfg['input_size'][-1])
    own = eval_transform(r, crop_pct=cfg['crop_pct'], mean=cfg['mean'], std=cfg['std'],
                         interpolation=cfg.get('interpolation', 'bilinear'))
    timm_tf = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
    row = {'resolution': r}
    for key, data, resolution in (('in_memory', test, r), ('cfg_transform', FilesView(test.images, test.labels, own), None),
                                  ('timm_transform', FilesView(test.images, test.labels, timm_tf), None)):
        row[key] = round(evaluate(model, DataLoader(data, batch_size=500), resolution=resolution, progress=False)['top1'], 2)
    return row


def demo_entries(demo_dir: Path) -> list[dict]:
    test = load_image_data('fashion-mnist').val
    rows = []
    for name in oqatnets.register_zoo_table(demo_dir / 'zoo.json'):
        model = oqatnets.create_model(name, pretrained=True, cache_dir=demo_dir / 'hub', local_files_only=True).eval()
        rows.append({'model': name, 'card_top1': model.pretrained_cfg.get('top1'), **top1_three_ways(model, test)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def trained_alone(out: Path) -> list[dict]:
    """The largest and the smallest `small_signed` subnet, each trained alone at 4 bits for one epoch (lr 0.1) on
    the first 24 000 training images as ``data.train`` serves them (random 2-px shifts and flips), BN recalibrated
    on the next 1 000."""
    data = load_image_data('fashion-mnist')
    ctx = init_distributed(device='cpu', join_group=False)
    rows = []
    for which in ('max', 'min'):
        supernet = oqatnets.OQATSupernet(space='small_signed', bits=4, num_classes=10)
        spec = supernet.set_max_subnet() if which == 'max' else supernet.set_min_subnet()
        torch.manual_seed(0)
        net = supernet.get_subnet(spec)
        finetune(model=net, train_set=Subset(data.train, range(24000)), recipe=get_recipe('small_signed'), epochs=1,
                 resolution=spec.resolution, out_dir=out / which, ctx=ctx, lr=0.1)
        net.eval()
        recalibrate_bn(net, DataLoader(Subset(data.train, range(24000, 25000)), batch_size=250),
                       resolution=spec.resolution, mode='population')
        net.pretrained_cfg = {**net.pretrained_cfg, 'mean': list(data.mean), 'std': list(data.std), 'crop_pct': data.crop_pct}
        rows.append({'model': f'small_signed {which}, trained alone 1 epoch', **top1_three_ways(net, data.val)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--demo-dir', type=Path, help='a `make demo` output folder (zoo.json, hub/)')
    parser.add_argument('--train', action='store_true', help='train one subnet per resolution alone first')
    parser.add_argument('--out', type=Path, default=Path('runs/bench/cfg_transform'))
    args = parser.parse_args()
    if not args.demo_dir and not args.train:
        parser.error('pass --demo-dir DIR and/or --train')
    rows = (demo_entries(args.demo_dir) if args.demo_dir else []) + (trained_alone(args.out) if args.train else [])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'rows.json').write_text(json.dumps(rows, indent=2) + '\n')
    print('| model | resolution | card top-1 | as measured (in memory) | cfg transform | timm transform |')
    print('|---|---|---|---|---|---|')
    for r in rows:
        print(f"| {r['model']} | {r['resolution']} | {r.get('card_top1', '–')} | {r['in_memory']} | "
              f"{r['cfg_transform']} | {r['timm_transform']} |")


if __name__ == '__main__':
    main()
