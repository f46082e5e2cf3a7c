"""`make bench`: every benchmark in turn, each in its own process, output kept under runs/bench/.

    python benchmarks/run.py [--quick]

``--quick`` is a ~10-minute smoke run of the same code (fewer rounds, the tiny demo preset).
The figures in docs/BENCHMARKS.md are copied from a full run's ``runs/bench/REPORT.md``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def steps(quick: bool) -> list[tuple[str, list[str]]]:
    return [
        ('speed', ['bench_speed.py'] + (['--quick'] if quick else [])),
        ('deploy', ['bench_deploy.py'] + (['--quick', '--fmnist-steps', '100'] if quick else [])),
        ('zoo', ['bench_zoo.py', '--repeats', '3' if quick else '10']),
        ('training', ['bench_training.py', '--steps', '2' if quick else '5']),
        ('claims', ['bench_claims.py'] + (['--quick'] if quick else [])),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--out', type=Path, default=Path('runs/bench'))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report, failed = [f'# Benchmark run {time.strftime("%Y-%m-%d %H:%M")}' + (' (quick)' if args.quick else '')], []
    for name, command in steps(args.quick):
        command = [sys.executable, str(HERE / command[0]), *command[1:]]
        print(f'\n== {name}: {" ".join(command[1:])}', flush=True)
        start = time.perf_counter()
        proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=None, text=True)
        seconds = time.perf_counter() - start
        print(proc.stdout, flush=True)
        (args.out / f'{name}.txt').write_text(proc.stdout)
        report += [f'\n## {name} (`python benchmarks/{" ".join(command[1:]).split("benchmarks/")[-1]}`, '
                   f'{seconds / 60:.1f} min, exit {proc.returncode})\n', proc.stdout.strip()]
        if proc.returncode:
            failed.append(name)
    (args.out / 'REPORT.md').write_text('\n'.join(report) + '\n')
    print(f'\nreport: {args.out / "REPORT.md"}' + (f'; failed: {", ".join(failed)}' if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
