#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb (`--check`: exit 1 if README.md is not what it would write).

nbdev's own `nbdev_readme` renders through Quarto, a separate program; this does the same conversion for the
cells index.ipynb uses: markdown cells as they are, visible code cells as Python blocks, hidden cells skipped."""
import json, sys
from pathlib import Path
root = Path(__file__).resolve().parent.parent

def render(nb_path=root/'nbs'/'index.ipynb') -> str:
    nb = json.loads(nb_path.read_text(encoding='utf-8'))
    parts = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown': parts.append(src.strip())
        elif c['cell_type'] == 'code':
            lines = src.splitlines()
            if any(l.strip() in ('#| hide', '#|hide') for l in lines): continue
            code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
            if code: parts.append(f'```python\n{code}\n```')
    return '\n\n'.join(parts) + '\n'

if __name__ == '__main__':
    text, readme = render(), root/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of date: run .ci/readme.py')
    else:
        tmp = readme.with_suffix('.md.part'); tmp.write_text(text, encoding='utf-8'); tmp.replace(readme)
