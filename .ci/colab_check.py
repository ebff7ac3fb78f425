#!/usr/bin/env python3
"""Install imgclf into a stand-in for Google Colab as the notebooks' Colab cell does, and check that it changes none of
Colab's packages. Run with the stand-in venv's Python, from the repository root:
  python .ci/colab_check.py resolve   # pip's dry run against Colab's versions (nothing installed)
  python .ci/colab_check.py install   # Colab's versions of what imgclf touches, then imgclf itself
Colab's list of packages: tests/colab/pip-freeze.txt (see tests/colab/README.md), or the file $COLAB_FREEZE names."""
import json, os, re, shlex, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FREEZE = Path(os.environ.get('COLAB_FREEZE') or ROOT/'tests/colab/pip-freeze.txt')  # another list: check another Colab
CELL_NB = ROOT/'nbs/00_first_model.ipynb'  # the first lesson: its first cell installs imgclf in Colab
# Colab's torch pair is the CPU build from PyTorch's own index (`torch @ https://download.pytorch.org/...+cpu`);
# PyPI's build of the same versions is what pip can resolve against here.
TORCH = {'torch': '2.11.0', 'torchvision': '0.26.0'}
# The installed stand-in uses torch 2.14.1 / torchvision 0.29.1 instead: PyPI's 2.11.0 is the CUDA build, which needs
# gigabytes of nvidia-* wheels of versions found nowhere on this machine, while 2.14.1's lie in the local wheel cache.
# Nothing imgclf does depends on which torch 2.x it runs on; the resolution check above holds Colab's exact pair.
TORCH_STANDIN = {'torch': '2.14.1', 'torchvision': '0.29.1'}
# torch 2.14 needs setuptools>=77.0.3 where Colab has 75.2.0: in the stand-in it goes with torch, unheld.
STANDIN_FREE = {'setuptools'}
# Colab's CUDA libraries are pinned for its other packages; torch from PyPI needs its own, so they are not held.
UNHELD = re.compile(r'^(nvidia-|cuda-|triton$)')
# What runs the notebooks and the classic Notebook the cleaner is driven in, at Colab's versions.
RUNNERS = ['nbclient', 'ipykernel', 'notebook']


def norm(name:str) -> str: return re.sub(r'[-_.]+', '-', name).lower()

def colab_versions() -> dict:
    "Colab's packages: normalised name -> version (`name @ url` lines give the version in the wheel's name, if any)"
    out = {}
    for line in FREEZE.read_text().splitlines():
        if m := re.match(r'^([A-Za-z0-9_.-]+)==(\S+)$', line.strip()): out[norm(m[1])] = m[2]
        elif m := re.match(r'^([A-Za-z0-9_.-]+) @ \S+/[^/]+?-(\d[^-]*)-[^/]*\.whl', line.strip()):
            out[norm(m[1])] = m[2].replace('%2B', '+')
    return out

def public(v:str) -> str: return v.split('+')[0]

def constraints(colab:dict, torch:dict, free=()) -> Path:
    "A constraints file holding each of Colab's packages at its version (CUDA libraries and `free` left out, `torch` as given)"
    lines = [f'{k}=={v}' for k, v in colab.items() if not UNHELD.match(k) and k not in torch and k not in free] + [f'{k}=={v}' for k, v in torch.items()]
    f = Path(tempfile.mkstemp(prefix='colab-', suffix='.txt')[1])
    f.write_text('\n'.join(lines) + '\n')
    return f

def cell_args() -> list:
    "The arguments of `pip install` in the notebooks' Colab cell, with this checkout in place of the git URL"
    nb = json.loads(CELL_NB.read_text())
    lines = [l for c in nb['cells'] if c['cell_type'] == 'code' for l in ''.join(c['source']).splitlines()
             if re.match(r'\s*[!%]pip install ', l)]
    assert len(lines) == 1, f'expected one `!pip install` line in {CELL_NB.name}, found {lines}'
    args = shlex.split(lines[0].strip()[1:])[2:]
    out = []
    for a in args:
        if m := re.match(r'^imgclf(\[[^\]]*\])?\s*@\s*git\+\S+$', a): a = f'{ROOT}{m[1] or ""}'
        out.append(a)
    assert any(a.startswith(str(ROOT)) for a in out), f'no `imgclf @ git+...` requirement in: {lines[0]}'
    return out

def pip(*args, check=True):
    cmd = [sys.executable, '-m', 'pip', *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode:
        err = '\n'.join(l for l in r.stderr.splitlines() if not l.startswith('WARNING: Location'))  # the local wheel index's noise
        sys.exit(f'FAILED: {shlex.join(cmd)}\n{r.stdout[-4000:]}\n{err[-6000:]}')
    return r

def installed() -> dict:
    return {norm(d['name']): d['version'] for d in json.loads(pip('list', '--format=json').stdout)}


def resolve() -> list:
    "Dry-run the Colab cell's install with Colab's versions held; return the Colab packages it touches"
    colab, args = colab_versions(), cell_args()
    cons = constraints(colab, TORCH)
    loud = [a for a in args if a not in ('-q', '--quiet', '-qq')]  # the cell's quiet flag would hide which package conflicts
    with tempfile.TemporaryDirectory() as d:
        r = pip('install', '--dry-run', '--ignore-installed', '-c', str(cons), '--report', f'{d}/r.json', *loud, check=False)
        if r.returncode:
            conflict = '\n'.join(l for l in (r.stdout + r.stderr).splitlines() if re.search(r'conflict|requires|depends|requested|constraint|ERROR|because|cannot', l, re.I))
            sys.exit(f'Colab check FAILED: installing imgclf as the Colab cell does ({shlex.join(args)}) would change one '
                     f"of Colab's packages or cannot be installed beside them. pip says:\n{conflict or r.stderr[-4000:]}")
        report = json.loads(Path(f'{d}/r.json').read_text())
    got = {norm(i['metadata']['name']): i['metadata']['version'] for i in report['install']}
    got = {k: v for k, v in got.items() if not UNHELD.match(k)}  # torch's CUDA libraries: PyPI's torch brings its own
    changed = {k: (colab[k], v) for k, v in got.items() if k in colab and public(v) != public(colab[k])}
    if changed:  # the constraints should make pip refuse instead; kept so a change can never pass silently
        sys.exit('Colab check FAILED: pip would change ' + ', '.join(f'{k} {a} -> {b}' for k, (a, b) in changed.items()))
    touched, added = sorted(k for k in got if k in colab), sorted(k for k in got if k not in colab and k != 'imgclf')
    print(f"Colab check: imgclf resolves with all {len(touched)} of Colab's packages it touches held at Colab's versions "
          f"({len(added)} added: {' '.join(f'{k}=={got[k]}' for k in added)})")
    return touched


def install():
    "Make this venv a stand-in for Colab (Colab's versions of what imgclf touches), install imgclf as the cell does, compare"
    colab, touched = colab_versions(), resolve()
    cons = constraints(colab, TORCH_STANDIN, STANDIN_FREE)
    want = sorted((set(touched) | set(RUNNERS)) - STANDIN_FREE)
    pins = [f'{k}=={TORCH_STANDIN.get(k, colab[k])}' for k in want]
    pip('install', '-q', '-c', str(cons), *pins)
    before = installed()
    pip('install', '-c', str(cons), *cell_args())
    after = installed()
    changed = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
    if changed:
        sys.exit("Colab check FAILED: installing imgclf changed packages Colab has: "
                 + ', '.join(f'{k} {a} -> {b}' for k, (a, b) in changed.items()))
    held = [k for k, v in before.items() if k in colab and public(v) == public(colab[k])]
    added = sorted(set(after) - set(before) - {'imgclf'})
    print(f"Colab stand-in: {len(held)} of Colab's packages installed at Colab's versions (torch {TORCH_STANDIN['torch']} "
          f"standing in for {TORCH['torch']}+cpu); installing imgclf as the Colab cell does held every one and added {len(added)}")


if __name__ == '__main__':
    {'resolve': resolve, 'install': install}[sys.argv[1]]()
