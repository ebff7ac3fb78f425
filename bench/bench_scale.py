"""Does imgclf's data pipeline keep its speed and memory as the dataset grows? From 2,000 to 20,000 photos.

For each size a dataset of that many JPEG files is written into a temporary folder: the flower photos (the built-in
set, or `--source FOLDER`) repeated, each copy randomly cropped, flipped, turned and brightened. Then, in a fresh
process with a fresh IMGCLF_HOME, what `train_classifier` does with it before the model sees a batch:
  fill   list the files, decode, check and shrink each once into the presize cache (`image_dls(..., presize=...)`)
  epoch  one full epoch of the training loader: every picture read from the cache, cropped, augmented, batched
and the process's peak resident memory. The cache lives on disk, so memory must not grow with the dataset, and the
time per image must stay the same. Prints a table and writes a plot of both (PNG).

    python bench/bench_scale.py [--sizes 2000 5000 10000 20000] [--source FOLDER] [--size 160] [--png FILE]
                                [--photo-size 1024] [--nocache]
"""
import argparse, json, os, random, shutil, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHILD = r'''
import json, sys, time, resource
a = json.loads(sys.argv[1])

def peak_mb() -> float:
    "This program's own peak resident memory: VmHWM of its memory map (ru_maxrss would include the parent's, inherited at exec)"
    try:
        with open('/proc/self/status') as f:
            for l in f:
                if l.startswith('VmHWM:'): return int(l.split()[1]) / 1024
    except OSError: pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: the best there is

import imgclf.core
import torch
from imgclf.data import image_dls, presize_for
from imgclf.augment import augment_tfms
torch.set_num_threads(2)
item_tfms, batch_tfms = augment_tfms(a['size'])
t0 = time.perf_counter()
dls = image_dls(a['data'], size=a['size'], bs=64, item_tfms=item_tfms, batch_tfms=batch_tfms,
                presize=presize_for(a['size']) if a['cache'] else None)
t1 = time.perf_counter()
n = 0
for xb, yb in dls.train: n += len(xb)
t2 = time.perf_counter()
print(json.dumps(dict(files=len(dls.report.items), fill=t1 - t0, epoch=t2 - t1, batches_images=n,
                      peak_mb=peak_mb())))
'''


def augmented_copies(photos:list, dest:Path, start:int, stop:int, long_side:int|None=None, seed:int=0):
    "Write photos `start`..`stop-1` of the repeated, augmented set into `dest`/CLASS/NNNNN.jpg"
    from PIL import Image, ImageOps, ImageEnhance
    def one(i):
        src = photos[i % len(photos)]
        rnd = random.Random(seed * 1_000_003 + i)
        with Image.open(src) as im: im = ImageOps.exif_transpose(im).convert('RGB')
        w, h = im.size; k = rnd.uniform(0.8, 1.0)
        cw, ch = int(w * k), int(h * k); x, y = rnd.randint(0, w - cw), rnd.randint(0, h - ch)
        im = im.crop((x, y, x + cw, y + ch)).rotate(rnd.uniform(-15, 15), resample=Image.BILINEAR)
        if rnd.random() < 0.5: im = ImageOps.mirror(im)
        im = ImageEnhance.Brightness(im).enhance(rnd.uniform(0.8, 1.2))
        if long_side: im = im.resize((round(im.width * long_side / max(im.size)), round(im.height * long_side / max(im.size))), Image.BICUBIC)
        out = dest/src.parent.name/f'{i:05d}.jpg'
        out.parent.mkdir(parents=True, exist_ok=True)
        im.save(out, quality=90)
    with ThreadPoolExecutor(os.cpu_count() or 1) as ex: list(ex.map(one, range(start, stop)))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--sizes', type=int, nargs='+', default=[2000, 5000, 10000, 20000])
    p.add_argument('--source', help='folder of class folders to repeat (default: the built-in flower photos)')
    p.add_argument('--size', type=int, default=160, help='training image size (default %(default)s)')
    p.add_argument('--png', default=None, help='plot file (default: bench_scale.png in the temporary folder)')
    p.add_argument('--photo-size', type=int, help='long side of the written photos, e.g. 1024 for phone-like photos (default: as the source)')
    p.add_argument('--nocache', action='store_true', help='also time an epoch without the presize cache (each picture decoded every epoch)')
    a = p.parse_args()
    from imgclf.core import image_files
    tmp = Path(tempfile.mkdtemp(prefix='imgclf-scale-'))
    if a.source: src = Path(a.source)
    else:
        from imgclf.photos import flower_photos
        src = flower_photos(tmp/'source')
    photos = [f for f in image_files(src) if f.parent != src]
    data = tmp/'data'
    print(f'{len(photos)} source photos from {src}; datasets in {data}; {os.cpu_count()} CPU cores; {a.size} px', flush=True)
    print(f'{"images":>7}  {"write s":>7}  {"fill s":>7}  {"fill ms/img":>11}  {"epoch s":>7}  {"epoch ms/img":>12}  {"peak MB":>8}', flush=True)
    rows, have = [], 0
    try:
        for n in sorted(a.sizes):
            t = time.perf_counter(); augmented_copies(photos, data, have, n, a.photo_size); have = n; write = time.perf_counter() - t
            home = tmp/f'home-{n}'
            def child(cache):
                out = subprocess.run([sys.executable, '-c', CHILD, json.dumps(dict(data=str(data), size=a.size, cache=cache))],
                                     capture_output=True, text=True, env={**os.environ, 'IMGCLF_HOME': str(home)})
                if out.returncode: sys.exit(f'{n} images failed:\n{out.stderr[-3000:]}')
                return json.loads(out.stdout.strip().splitlines()[-1])
            r = dict(child(True), images=n, write=write)
            if a.nocache: r['nocache'] = child(False)
            shutil.rmtree(home)  # the cache of this size: disk space back
            rows.append(r)
            print(f'{n:>7}  {write:7.1f}  {r["fill"]:7.1f}  {1000*r["fill"]/n:11.2f}  {r["epoch"]:7.1f}  '
                  f'{1000*r["epoch"]/r["batches_images"]:12.2f}  {r["peak_mb"]:8.0f}' +
                  (f'   without the cache: check {r["nocache"]["fill"]:.1f} s, epoch {1000*r["nocache"]["epoch"]/r["nocache"]["batches_images"]:.2f} ms/img '
                   f'(x{r["nocache"]["epoch"]/r["epoch"]:.2f} the cached epoch), peak {r["nocache"]["peak_mb"]:.0f} MB' if a.nocache else ''), flush=True)
        first, last = rows[0], rows[-1]
        print(f'\n{last["images"]:,} vs {first["images"]:,} images: fill time per image x{(last["fill"]/last["images"])/(first["fill"]/first["images"]):.2f}, '
              f'epoch time per image x{(last["epoch"]/last["batches_images"])/(first["epoch"]/first["batches_images"]):.2f}, '
              f'peak memory x{last["peak_mb"]/first["peak_mb"]:.2f}')
        import matplotlib; matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
        xs = [r['images'] for r in rows]
        ax1.plot(xs, [1000*r['fill']/r['images'] for r in rows], 'o-', label='decode + check + shrink once (cache fill)')
        ax1.plot(xs, [1000*r['epoch']/r['batches_images'] for r in rows], 's-', label='one training epoch of the loader')
        ax1.set_xlabel('images in the dataset'); ax1.set_ylabel('ms per image'); ax1.set_ylim(bottom=0); ax1.legend(fontsize=8)
        ax2.plot(xs, [r['peak_mb'] for r in rows], 'o-', color='C2')
        ax2.set_xlabel('images in the dataset'); ax2.set_ylabel('peak resident memory, MB'); ax2.set_ylim(bottom=0)
        fig.suptitle(f'imgclf data pipeline at {a.size} px, {os.cpu_count()} CPU cores')
        fig.tight_layout()
        png = Path(a.png) if a.png else tmp/'bench_scale.png'
        fig.savefig(png, dpi=100)
        print(f'plot: {png}')
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == '__main__': main()
