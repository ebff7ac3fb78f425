"""Train the same backbone on the same data with the tutorials' recipe and with imgclf's default; compare.

The tutorials' recipe: RandomResizedCrop(224, min_scale=0.5) per item, aug_transforms() per batch, batch size 64,
`fine_tune(4)` at fastai's default learning rate. imgclf's default: `train_classifier` with its defaults.
Each recipe runs in its own process (so peak memory is its own), one after the other, same backbone and seed.

    python bench/bench_train.py [DATA] [--arch efficientnet_lite0] [--seed 42]

DATA is a folder with one sub-folder of photos per class, e.g. the full TensorFlow flowers photos (5 classes x
400 photos, about 4 minutes on 2 CPU cores); without it, a copy of imgclf's built-in flower photos (406 photos)
in a temporary folder. Prints wall time, final error rate, peak resident memory, the error after each epoch,
and the time imgclf took to reach the tutorials' final error.
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path

CHILD = r'''
import json, os, sys, time, resource, warnings
args = json.loads(sys.argv[1])
import imgclf.core
from fastai.vision.all import *
from imgclf.data import image_dls
from imgclf.train import make_learner, train_classifier

class Clock(Callback):
    "Record seconds since the start of the run and the error rate after every epoch"
    order = 100
    def __init__(self, t0): self.t0, self.log, self.seen = t0, [], 0
    def before_fit(self): self.seen = len(self.recorder.values)
    def after_epoch(self):
        if len(self.recorder.values) == self.seen: return  # no new row: not a training epoch (e.g. `validate`)
        self.seen = len(self.recorder.values)
        self.log.append((time.perf_counter() - self.t0, float(self.recorder.values[-1][2])))

torch.set_num_threads(os.cpu_count())
t0 = time.perf_counter()
clock = Clock(t0)
if args['recipe'] == 'tutorial':
    set_seed(args['seed'], reproducible=True)
    dls = image_dls(args['data'], seed=args['seed'], bs=64, item_tfms=RandomResizedCrop(224, min_scale=0.5),
                    batch_tfms=aug_transforms())
    learn = make_learner(dls, args['arch'], out=args['out'], train_bn=True, cbs=[])  # fastai's own defaults
    learn.add_cb(clock)
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(4)
else:
    learn = train_classifier(args['data'], arch=args['arch'], seed=args['seed'], out=args['out'], quiet=True,
                             cbs=[clock])
secs = time.perf_counter() - t0
err = float(learn.validate()[1])
print(json.dumps(dict(recipe=args['recipe'], seconds=secs, error=err, epochs=clock.log,
                      peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)))
'''

def run(recipe, a):
    out = subprocess.run([sys.executable, '-c', CHILD, json.dumps(dict(recipe=recipe, data=a.data, arch=a.arch, seed=a.seed,
                          out=f'/tmp/imgclf-bench-{recipe}'))], capture_output=True, text=True)
    if out.returncode: sys.exit(f'{recipe} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('data', nargs='?', help='folder of class folders (default: the built-in flower photos)')
    p.add_argument('--arch', default='efficientnet_lite0')
    p.add_argument('--seed', type=int, default=42)
    a = p.parse_args()
    if a.data is None:
        from imgclf.photos import flower_photos
        a.data = str(flower_photos(Path(tempfile.mkdtemp())/'flowers'))
    print(f'data {a.data}, backbone {a.arch}, seed {a.seed}, {os.cpu_count()} CPU cores', flush=True)
    res = {r: run(r, a) for r in ('tutorial', 'imgclf')}
    for r, v in res.items():
        print(f'{r:>9}: {v["seconds"]:7.1f} s   error {v["error"]:.2%}   peak RSS {v["peak_mb"]:.0f} MB   '
              f'per epoch: ' + ', '.join(f'{e:.1%}@{s:.0f}s' for s, e in v['epochs']))
    t, m = res['tutorial'], res['imgclf']
    reach = next((s for s, e in m['epochs'] if e <= t['error']), None)
    print(f'\nwall time imgclf/tutorial: {m["seconds"]/t["seconds"]:.2f}   (target <= 0.33)')
    print(f'error imgclf - tutorial: {100*(m["error"]-t["error"]):+.2f} points   (target <= 0)')
    print(f'peak memory imgclf/tutorial: {m["peak_mb"]/t["peak_mb"]:.2f}')
    print('time for imgclf to reach the tutorial recipe\'s final error: ' +
          (f'{reach:.0f} s ({reach/t["seconds"]:.2f} of the tutorial\'s time)' if reach else 'not reached'))
