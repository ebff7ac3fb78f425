#!/usr/bin/env python3
"""Give a new stand-in venv the torch stack that .venv already has, as hard links instead of a second copy.
Usage, from the repository root:  .venv/bin/python .ci/link_packages.py .venv .venv-colab

torch's CUDA build from PyPI is about 5.5 GB in a venv (3.2 GB of it nvidia-* libraries, which are the same files for
every Python), and .ci/run makes three venvs: .venv, then the Colab and Binder stand-ins. Copies of it ran a CI
machine out of disk. Hard links cost no space, so each stand-in gets, before pip runs in it:
- every distribution named in PACKAGES whose wheel the stand-in's Python can use (`py3-none-*` for any Python; a
  `cp311` wheel only for Python 3.11), files and metadata, so pip sees them installed and installs only the rest;
- nothing else: pip still resolves and installs everything the stand-in asks for, and replaces a linked package
  whose version does not fit. Removing a link (pip uninstalling it) leaves .venv's file in place; Python writes
  byte-code by renaming a new file, never into a shared one.
Left out: files a distribution puts outside site-packages (scripts such as `torchrun` carry .venv's interpreter path).
If the two venvs are on different file systems nothing is linked and pip installs as usual."""
import errno, os, re, sys
from email.parser import Parser
from pathlib import Path

PACKAGES = re.compile(r'^(torch|torchvision|triton|nvidia[-_].*|cuda[-_].*)$', re.I)


def site_packages(venv:Path) -> Path:
    found = sorted(venv.glob('lib/python3.*/site-packages'))
    if len(found) != 1: sys.exit(f'link_packages: expected one site-packages in {venv}, found {len(found)}')
    return found[0]

def fits(dist_info:Path, py:str) -> bool:
    "Whether the wheel this distribution came from runs on Python `py` ('311', '313')"
    tags = Parser().parsestr((dist_info/'WHEEL').read_text()).get_all('Tag') or []
    return any(t.split('-')[0] in ('py3', 'py2.py3', f'cp{py}') for t in tags)

def files(dist_info:Path, site:Path):
    "The files of a distribution that lie inside site-packages, relative to it (from its RECORD)"
    for line in (dist_info/'RECORD').read_text().splitlines():
        rel = line.rsplit(',', 2)[0]
        if rel and (site/rel).resolve().is_relative_to(site.resolve()) and (site/rel).is_file(): yield rel

def link(src_venv:Path, dst_venv:Path) -> None:
    src, dst = site_packages(src_venv), site_packages(dst_venv)
    py = dst.parent.name.removeprefix('python').replace('.', '')  # 'python3.13' -> '313'
    linked, size = [], 0
    for info in sorted(src.glob('*.dist-info')):
        name = info.name.split('-')[0]
        if not PACKAGES.match(name) or not (info/'WHEEL').exists() or not fits(info, py): continue
        for rel in files(info, src):
            to = dst/rel
            if to.exists(): continue
            to.parent.mkdir(parents=True, exist_ok=True)
            try: os.link(src/rel, to)
            except OSError as e:
                if e.errno != errno.EXDEV: raise
                print(f'link_packages: {src_venv} and {dst_venv} are on different file systems; nothing linked')
                return
            size += (src/rel).stat().st_size
        linked.append(info.name.removesuffix('.dist-info'))
    print(f'link_packages: {len(linked)} distributions from {src_venv} linked into {dst_venv} '
          f'({size/2**30:.1f} GB not copied): {" ".join(linked)}')


if __name__ == '__main__':
    if len(sys.argv) != 3: sys.exit(__doc__)
    link(Path(sys.argv[1]), Path(sys.argv[2]))
