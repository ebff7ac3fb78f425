"""How long the cleaner takes to put a page of pictures in front of you: imgclf's `Cleaner` against fastai's
`ImagesCleaner` (the grid inside `ImageClassifierCleaner`), in one run.

    python bench/bench_cleaner.py [--data FOLDER] [--page 48] [--big 2000] [--runs 5]

Two sets of pictures: the dataset as it is (default: the built-in flower photos, small JPEGs) and the same pictures
enlarged to `--big` pixels on the long side, as photos from the web and from phones often are. For each, with
the seconds until the widget holds a page of `--page` pictures, compared like with like:

- cold (neither widget has made these thumbnails before; the files themselves are in the OS's cache for both):
  - fastai: `ImagesCleaner.set_fns(files)` on a new widget, what its cleaner does on a change of class or split
    (thumbnails made in worker processes, each shown as a PNG, which Jupyter's `display` makes and this script
    does by calling the picture's `_repr_png_`: there is no kernel here);
  - imgclf, first page: `Cleaner.go(0)` with a new thumbnail maker (thumbnails made on worker threads, decoded
    at a reduced scale, kept as JPEG);
- warm (each widget is asked again for pictures it was given before):
  - fastai, the same page again: `set_fns(files)` a second time, what it does when you come back to a class
    (it keeps no thumbnails, so it makes them all again);
  - imgclf, next page: `Cleaner.go(1)` once the background thread has made it while you looked at the first;
  - imgclf, back to a page seen: `Cleaner.go(0)` again (from its cache).

The ranking is computed once beforehand and not timed (see `bench_clean.py` for its cost). The target is a page
of 48 in under a second; the browser's own drawing is not included, the bytes it is sent for the page are.
"""
import argparse, os, shutil, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np
warnings.filterwarnings('ignore')


def enlarged(src:Path, dest:Path, files:list, side:int) -> Path:
    "Copies of `files` (relative to `src`) enlarged to `side` pixels on the long side, as high-quality JPEGs"
    from PIL import Image
    for f in files:
        im = Image.open(src/f).convert('RGB')
        k = side / max(im.size)
        (dest/f).parent.mkdir(parents=True, exist_ok=True)
        im.resize((round(im.width * k), round(im.height * k)), Image.Resampling.BICUBIC).save(dest/f, quality=92)
    return dest


def timed(f) -> float:
    t = time.perf_counter(); f(); return time.perf_counter() - t


def measure(path:Path, ranked, page:int) -> dict:
    import fastai.vision.widgets as fw
    from fastai.vision.widgets import ImagesCleaner
    fw.display = lambda im: im._repr_png_()  # what Jupyter's display does with each thumbnail (here there is no kernel)
    from imgclf.cleaner import Cleaner, Choices, Thumbnails
    files = [path/f for f in ranked.file[:page]]
    fa = ImagesCleaner(max_n=page)
    out = {'fastai': timed(lambda: fa.set_fns(files))}  # cold
    out['fastai same page again'] = timed(lambda: fa.set_fns(files))  # warm: the page it showed before
    cl = Cleaner(path, ranked, page_size=page, choices=Choices(path, autosave=False))  # draws page 1 as it is built
    cl.thumbs.pool.shutdown(wait=True)  # the page 2 it started making in the background done: nothing competes for the cores
    cl.thumbs = Thumbnails(cl.thumbs.size)  # a new thumbnail maker: nothing made yet
    out['imgclf first page'] = timed(lambda: cl.go(0))
    nxt = [path/f for f in ranked.file[page:2 * page]]
    deadline = time.time() + 120
    while not all(cl.thumbs._key(f) in cl.thumbs.cache for f in nxt) and time.time() < deadline: time.sleep(0.05)  # you look at page 1
    out['imgclf next page'] = timed(lambda: cl.go(1))
    out['imgclf page seen before'] = timed(lambda: cl.go(0))
    from fastai.vision.widgets import _open_thumb
    out['fastai kB'] = sum(len(_open_thumb(f, 128, 256)._repr_png_()) for f in files) / 1e3  # its default thumbnail size
    out['imgclf kB'] = sum(len(b) for b in cl.thumbs.get(files)) / 1e3
    return out


# each of imgclf's figures against fastai's in the same state: cold against cold, warm against warm
AGAINST = {'fastai': None, 'fastai same page again': None, 'imgclf first page': 'fastai',
           'imgclf next page': 'fastai same page again', 'imgclf page seen before': 'fastai same page again'}

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--data', help='a folder of class folders (default: the built-in flower photos)')
    p.add_argument('--page', type=int, default=48, help='pictures per page (default %(default)s)')
    p.add_argument('--runs', type=int, default=5, help='times each is measured, from nothing cached (default %(default)s)')
    p.add_argument('--big', type=int, default=2000, help='long side of the enlarged copies, in pixels (default %(default)s)')
    a = p.parse_args()
    from imgclf.photos import flower_photos
    from imgclf.rank import rank_suspects, Kind
    print(f'machine: {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}')
    with tempfile.TemporaryDirectory() as tmp:
        os.environ['IMGCLF_HOME'] = str(Path(tmp)/'home')  # the ranking's feature cache stays out of yours
        src = Path(a.data).expanduser() if a.data else flower_photos(Path(tmp)/'flowers')
        ranked = rank_suspects(src, progress=False)
        ranked = ranked[ranked.kind != Kind.unreadable].reset_index(drop=True)
        n = 2 * a.page
        if len(ranked) < n: sys.exit(f'{src} has {len(ranked)} readable pictures; two pages of {a.page} need {n}')
        big = Path(tmp)/'big'
        enlarged(src, big, list(ranked.file[:n]), a.big)
        sets = {f'{src.name} as it is': (src, ranked), f'the same enlarged to {a.big} px': (big, ranked.head(n).copy())}
        for name, (path, r) in sets.items():
            runs = [measure(path, r, a.page) for _ in range(a.runs)]
            res = {k: float(np.median([x[k] for x in runs])) for k in runs[0]}
            print(f'\n{name}: seconds until the widget holds a page of {a.page} pictures (median of {a.runs} runs)')
            for k, v in res.items():
                if k.endswith('kB') or k not in AGAINST: continue
                vs = AGAINST[k]
                ratio = f'   {res[vs] / v:6.1f}x faster than {vs} ({"cold" if vs == "fastai" else "warm"}: both)' if vs else ''
                print(f'  {k:26s} {v:7.3f} s{ratio}')
            print(f'  sent to the browser for the page: fastai {res["fastai kB"]:.0f} kB (PNG, 128 px), imgclf {res["imgclf kB"]:.0f} kB '
                  f'(JPEG, 160 px): {res["fastai kB"] / res["imgclf kB"]:.1f}x less')
        shutil.rmtree(big)


if __name__ == '__main__':
    main()
