"""Build imgclf's built-in photo set, `imgclf/flowers/`, from the TensorFlow flowers photos. Not needed to use imgclf.

The package ships the result; this script is how it was made, so it can be checked or made again:

    python bench/build_photos.py [FLOWERS] [--per-class 80] [--size 192] [--seed 8] [--out imgclf/flowers]

FLOWERS is a folder with one sub-folder per class (daisy, dandelion, rose, sunflower, tulip) of the tf_flowers
photos, whose file names start with the Flickr photo id; it defaults to ../shared/data/flowers beside this
repository. Every choice below comes from `random.Random(seed)`, so the same input and seed give the same set.

What it writes into OUT (replacing what was there):
- one folder per class, `--per-class` photos each, resized so the long side is `--size` pixels (JPEG, quality 85,
  no metadata);
- planted problems, as a web search would return them: two photos of every class filed in another class, one
  picture that is no flower at all in every class (scikit-image's sample photos), and one photo that is also
  filed, slightly cropped and brighter, under another class (a near-duplicate across two classes);
- `planted.csv`, the key to those problems: file, problem, true_class, note;
- `attribution.csv`: every file, its source page, its licence and what was changed;
- `LICENSE-CC-BY-2.0.txt`, the licence of the Flickr photos (kept from OUT if it is there, else SPDX's text
  from the npm package spdx-license-list, which needs `npm`), and `README.md`.
"""
import argparse, csv, io, random, re, shutil, sys
from pathlib import Path
import numpy as np
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ['daisy', 'dandelion', 'rose', 'sunflower', 'tulip']
# photos left out because they do not show their class in the first place (seen while checking the planted ones)
LEFT_OUT = {'12323085443': 'rose: a parade float, no rose to be seen'}
FLICKR = 'https://www.flickr.com/photo.gne?id={}'
CC_BY = 'CC BY 2.0 (https://creativecommons.org/licenses/by/2.0/)'
# scikit-image's sample photos that show no flower, with the source and licence its docstrings give
NOT_FLOWERS = {
    'astronaut': ('NASA Great Images, https://flic.kr/p/r9qvLn, via scikit-image (skimage.data.astronaut)',
                  'public domain (no known copyright restrictions)'),
    'coffee': ('Rachel Michetti, courtesy of Pikolo Espresso Bar, via scikit-image (skimage.data.coffee)', 'CC0 1.0'),
    'chelsea': ('Stefan van der Walt, via scikit-image (skimage.data.chelsea)', 'CC0 1.0'),
    'rocket': ('SpaceX, https://www.flickr.com/photos/spacexphotos/16511594820/, via scikit-image (skimage.data.rocket)',
               'public domain'),
    'camera': ('Lav Varshney, via scikit-image (skimage.data.camera)', 'CC0 1.0'),
}

def flickr_id(name:str) -> str:
    "The Flickr photo id a tf_flowers file name starts with"
    m = re.match(r'(\d+)_', name)
    if not m: raise ValueError(f'{name} does not start with a Flickr photo id')
    return m.group(1)

def save(im:Image.Image, dest:Path, size:int):
    "Save `im` as a JPEG whose long side is `size` pixels, without metadata"
    im = im.convert('RGB')
    k = size / max(im.size)
    im = im.resize((round(im.width*k), round(im.height*k)), Image.LANCZOS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    im.save(dest, 'JPEG', quality=85, optimize=True)

def build(src:Path, out:Path, per_class:int=80, size:int=192, seed:int=8):
    rng = random.Random(seed)
    lic_file = out/'LICENSE-CC-BY-2.0.txt'
    lic_text = lic_file.read_text() if lic_file.is_file() else cc_by_text()
    if out.exists(): shutil.rmtree(out)
    chosen = {c: rng.sample(sorted(p.name for p in (src/c).glob('*.jpg') if flickr_id(p.name) not in LEFT_OUT), per_class)
              for c in CLASSES}
    files, attrib, planted = {}, [], []  # files: dest relative path -> (source file, true class)
    for c in CLASSES:
        for n in chosen[c]: files[f'{c}/{n}'] = (src/c/n, c)
    # two photos of every class filed under another class
    for c in CLASSES:
        for n in chosen[c][:2]:
            wrong = rng.choice([o for o in CLASSES if o != c])
            del files[f'{c}/{n}']
            files[f'{wrong}/{n}'] = (src/c/n, c)
            planted.append(dict(file=f'{wrong}/{n}', problem='wrong class', true_class=c, note=f'a {c} filed as {wrong}'))
    for rel, (f, c) in sorted(files.items()):
        save(Image.open(f), out/rel, size)
        attrib.append(dict(file=rel, source=FLICKR.format(flickr_id(f.name)), licence=CC_BY,
                           changes=f'resized to {size} px, re-encoded' + ('' if rel.split('/')[0] == c else f'; filed under the wrong class on purpose (it shows a {c})')))
    # a near-duplicate across two classes: another size of the same Flickr photo, cropped and brighter
    c = CLASSES[rng.randrange(len(CLASSES))]
    n = chosen[c][2 + rng.randrange(per_class - 2)]
    other = rng.choice([o for o in CLASSES if o != c])
    im = Image.open(src/c/n).convert('RGB')
    w, h = im.size
    im = ImageEnhance.Brightness(im.crop((round(w*0.04), round(h*0.06), round(w*0.97), round(h*0.95)))).enhance(1.12)
    stem = re.sub(r'_[mnz]$', '', Path(n).stem)
    dup = f'{other}/{stem}_z.jpg' if stem != Path(n).stem else f'{other}/{stem}_m.jpg'
    save(im, out/dup, size)
    attrib.append(dict(file=dup, source=FLICKR.format(flickr_id(n)), licence=CC_BY,
                       changes=f'cropped, brightened, resized to {size} px; a near-duplicate of {c}/{n}, filed under the wrong class on purpose'))
    planted.append(dict(file=dup, problem='near-duplicate', true_class=c, note=f'the same photo as {c}/{n}, filed as {other}'))
    # one picture that is no flower in every class
    from skimage import data
    for c, (name, (source, lic)) in zip(rng.sample(CLASSES, len(CLASSES)), NOT_FLOWERS.items()):
        rel = f'{c}/{name}.jpg'
        save(Image.fromarray(np.asarray(getattr(data, name)())), out/rel, size)
        attrib.append(dict(file=rel, source=source, licence=lic,
                           changes=f'resized to {size} px, re-encoded; filed under {c} on purpose (it shows no flower)'))
        planted.append(dict(file=rel, problem='not a flower', true_class='', note=f'scikit-image sample photo "{name}", filed as {c}'))
    with open(out/'attribution.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, ['file', 'source', 'licence', 'changes']); w.writeheader()
        w.writerows(sorted(attrib, key=lambda r: r['file']))
    with open(out/'planted.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, ['file', 'problem', 'true_class', 'note']); w.writeheader()
        w.writerows(sorted(planted, key=lambda r: (r['problem'], r['file'])))
    lic_file.write_text(lic_text)
    (out/'README.md').write_text(README.format(n=len(attrib), per_class=per_class, size=size))
    return out

def cc_by_text() -> str:
    "The CC BY 2.0 legal code, from the SPDX licence list in the npm package spdx-license-list (needs `npm`)"
    import json, subprocess, tarfile, tempfile
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(['npm', 'pack', 'spdx-license-list@6.12.0'], cwd=d, check=True, capture_output=True)
        with tarfile.open(next(Path(d).glob('*.tgz'))) as t:
            lic = json.load(t.extractfile('package/licenses/CC-BY-2.0.json'))
    return lic['licenseText'].strip() + '\n'

README = """# imgclf's built-in flower photos

{n} small photos in five class folders: {per_class} photos per class from the TensorFlow flowers dataset
(Flickr photos under CC BY 2.0, see `LICENSE-CC-BY-2.0.txt`), resized to {size} px, plus a few planted problems
like those of real web-search results: photos filed in the wrong class, pictures that are no flower (scikit-image's
public-domain and CC0 sample photos) and a near-duplicate filed in two classes.

`attribution.csv` names the source page, the licence and the changes of every file. Flickr names each
photo's author on its page. `imgclf.photos.planted_problems()` reads the key to the planted problems.
Made by `bench/build_photos.py` in the imgclf repository.
"""

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('src', nargs='?', default=str(ROOT.parent/'shared'/'data'/'flowers'))
    p.add_argument('--out', default=str(ROOT/'imgclf'/'flowers'))
    p.add_argument('--per-class', type=int, default=80)
    p.add_argument('--size', type=int, default=192)
    p.add_argument('--seed', type=int, default=8)
    a = p.parse_args()
    if not all((Path(a.src)/c).is_dir() for c in CLASSES): sys.exit(f'{a.src} has no folders {", ".join(CLASSES)}')
    out = build(Path(a.src), Path(a.out), a.per_class, a.size, a.seed)
    n = sum(1 for _ in out.rglob('*.jpg')); mb = sum(f.stat().st_size for f in out.rglob('*') if f.is_file())/1e6
    print(f'{out}: {n} photos, {mb:.2f} MB')
