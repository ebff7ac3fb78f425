#!/usr/bin/env python3
"""Run notebooks top to bottom in a real Jupyter kernel (nbclient), skipping the cells nbdev_test skips.
For a venv where nbdev cannot be installed (nbdev 2 needs fastcore 1; Colab has fastcore 2).
Usage, from the repository root: python .ci/run_notebooks.py [--workers 2] NOTEBOOK...
Each notebook runs in its own folder with IN_TEST=1 and a temporary IMGCLF_HOME, as under nbdev_test."""
import argparse, configparser, os, re, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def skip_flags() -> set:
    "Cells marked with one of these directives are not run: settings.ini's tst_flags (as nbdev_test), and `eval: false`"
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'settings.ini')
    return set(cfg['DEFAULT'].get('tst_flags', '').split())

def directives(src:str) -> dict:
    "The nbdev directives (`#| name args`) at the top of a cell: name -> its arguments"
    out = {}
    for line in src.splitlines():
        if not line.strip(): continue
        m = re.match(r'\s*#\s*\|\s*([\w-]+):?\s*(.*)', line)
        if not m: break
        out[m[1]] = m[2].strip()
    return out

def runs(cell, flags:set) -> bool:
    if cell.cell_type != 'code': return False
    d = directives(cell.source)
    return not (flags & d.keys() or d.get('eval', '').lower() == 'false' or 'nbdev_export(' in cell.source)


STALLED = 3  # exit status of `run_one` when the kernel gave no answer to a cell in time (not a cell's error)

def run_one(path:Path, timeout:int=300):
    "Run one notebook in this process's Python; on failure, exit with the failing cell's source and traceback"
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if runs(c, skip_flags())]
    for c in nb.cells: c.outputs = []
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    try: client.execute()
    except CellTimeoutError as e:
        print(f'{path}: no answer from the kernel in {timeout}s\n{e}', file=sys.stderr); sys.exit(STALLED)
    except CellExecutionError as e:  # its message holds the cell's source and traceback, coloured for a terminal
        sys.exit(f'{path}: a cell failed\n' + re.sub(r'\x1b\[[0-9;]*m', '', str(e)))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('notebooks', nargs='+', type=Path)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--one', action='store_true', help='run the single notebook given in this process')
    a = ap.parse_args()
    if a.one: return run_one(a.notebooks[0].resolve())
    home = tempfile.mkdtemp(prefix='imgclf-home-')
    # one thread per kernel: two notebooks at once with torch's default threads would oversubscribe the cores
    env = {**os.environ, 'IN_TEST': '1', 'IMGCLF_HOME': home, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'),
           'PYDEVD_DISABLE_FILE_VALIDATION': '1'}  # ipykernel's debugger warns of Python 3.13's frozen modules on every start
    def go(nb):
        t = time.time()
        r = subprocess.run([sys.executable, __file__, '--one', str(nb)], env=env, capture_output=True, text=True)
        if r.returncode == STALLED:
            # Seen once in a few dozen runs with Colab's jupyter_client 7.4 and ipykernel 6.17: the kernel sat idle and
            # the cell's request or reply never arrived. That is the runner's channel, not the notebook: run it once more.
            print(f'note: {nb}: {r.stderr.strip().splitlines()[0]}; running it again', flush=True)
            r = subprocess.run([sys.executable, __file__, '--one', str(nb)], env=env, capture_output=True, text=True)
        dt = time.time() - t
        print(f'{"ok  " if r.returncode == 0 else "FAIL"} {dt:6.1f}s  {nb}', flush=True)
        return nb, r
    start = time.time()
    try:
        with ThreadPoolExecutor(a.workers) as ex: results = list(ex.map(go, a.notebooks))
    finally: shutil.rmtree(home, ignore_errors=True)
    failed = [(nb, r) for nb, r in results if r.returncode]
    for nb, r in failed: print(f'\n===== {nb} failed =====\n{r.stdout[-3000:]}{r.stderr[-12000:]}')
    print(f'{len(results) - len(failed)} of {len(results)} notebooks passed in {time.time() - start:.0f}s')
    sys.exit(1 if failed else 0)


if __name__ == '__main__': main()
