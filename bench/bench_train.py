"""Tell training recipes apart: each recipe over several seeds (different validation splits) and datasets, compared
with the tutorials' recipe and a linear probe in the same run.

Three arms, all on the same validation split (`image_dls(..., seed=SEED)`) and the same EfficientNet-Lite0:
  tutorial  the tutorials' recipe: RandomResizedCrop(224, min_scale=0.5) per item, aug_transforms() per batch,
            batch size 64, `fine_tune(4)` at fastai's default learning rate, fastai's defaults otherwise
  probe     nothing trained but a logistic regression: the frozen pretrained backbone's pooled features (what the
            head's first layer would see: average and max pooling) of each photo at 224 px, averaged with those of
            its mirror image, standardised, then scikit-learn's `LogisticRegression` with C chosen by 5-fold
            cross-validation (log loss) on the training photos only; its time counts everything from loading
            the photos to the predictions (features are kept only within the run)
  imgclf    `train_classifier` with its defaults: the linear recipe (a logistic regression on EfficientNet-Lite0's pooled
            features of the whole photo squished to 224 px, last layer and two middle stages, folded into a linear layer)
  finetune  `train_classifier(recipe='fine_tune')`: fastai's `fine_tune` with imgclf's augmentation, epochs and learning rate
and variants of the fine-tune recipe:
  imgclf-nocache  finetune, each picture decoded from its file every epoch (the recipe before the presize cache)
  imgclf-tenth    finetune, learning rate a tenth of the finder's lowest-loss rate (fastai's `minimum`, the course's
                  rule of thumb) instead of imgclf's hundredth
  imgclf-valley   finetune, learning rate from fastai's `valley` suggestion
  imgclf-224      finetune at 224 px
  imgclf:NAME=VALUE,...  `train_classifier` with these arguments (imgclf:recipe='fine_tune',epochs=6,size=192)
Every run is a separate process (so its time and peak memory are its own), one after the other, with a fresh
IMGCLF_HOME (the presize cache is filled within the run and counted in its time).

    python bench/bench_train.py [FOLDER ...] [--flowers] [--seeds 1 2 3 4 5] [--recipes tutorial probe imgclf] [--json FILE]
    python bench/bench_train.py --summary FILE     # the summary of the runs kept in FILE (seeds run separately)

Datasets: the built-in flower photos (406 photos) always; `--flowers` adds /work/shared/data/flowers (or the folder
in $IMGCLF_FLOWERS) when present; each FOLDER (one sub-folder of photos per class) is added too.
Prints, per dataset and recipe: mean and standard deviation of the validation error and of the wall time, seconds
per whole-network epoch (the training epochs only), peak memory and the time ratio against the tutorials' recipe;
then the paired differences in error, seed by seed (the same split): each recipe minus the tutorials' recipe and
minus the probe. `--json FILE` keeps every run.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile
from pathlib import Path

CHILD = r'''
import json, os, sys, time, resource
args = json.loads(sys.argv[1])
import imgclf.core
from fastai.vision.all import *
from imgclf.data import image_dls
import imgclf.train as T

class Clock(Callback):
    "Seconds since the start of the run and the validation error after every training epoch (`validate` is not one)"
    order = 100
    def __init__(self, t0): self.t0, self.log = t0, []
    def before_epoch(self): self.trained = False
    def before_train(self): self.trained = True  # a validation-only pass (`validate`, `get_preds`) never gets here
    def after_epoch(self):
        if not self.trained: return
        col = self.recorder.metric_names.index('error_rate') - 1  # values have no 'epoch' column
        self.log.append((time.perf_counter() - self.t0, float(self.recorder.values[-1][col])))

def valid_error(learn):
    "The error rate on the validation set, from the metric of that name"
    with learn.no_bar(): res = learn.validate()
    return float(res[1 + [m.name for m in learn.metrics].index('error_rate')])

def probe(args):
    "The frozen backbone's pooled features (photo and mirror averaged), a logistic regression with C from 5-fold CV"
    import numpy as np, warnings
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits
    set_seed(args['seed'], reproducible=True)
    dls = image_dls(args['data'], seed=args['seed'], size=224, bs=64)  # Resize(224): the centre square, no augmentation
    learn = T.make_learner(dls, args['arch'], out=args['out'])  # the same backbone and input normalisation
    body, pool = learn.model[0].eval().to(memory_format=torch.channels_last), learn.model[1][:2]  # concat pool, flatten
    def features(dl):
        X, y = [], []
        with torch.inference_mode():
            for xb, yb in dl:
                xb = xb.as_subclass(torch.Tensor).contiguous(memory_format=torch.channels_last)
                X.append(((pool(body(xb)) + pool(body(xb.flip(3)))) / 2).numpy()); y.append(yb.numpy())
        return np.concatenate(X), np.concatenate(y)
    Xt, yt = features(dls.test_dl(dls.train_ds.items, with_labels=True))  # validation transforms: no random crop
    Xv, yv = features(dls.valid)
    folds = int(min(5, np.bincount(yt).min()))
    search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
                          {'logisticregression__C': np.logspace(-4, 1, 11)}, scoring='neg_log_loss',
                          cv=StratifiedKFold(folds, shuffle=True, random_state=args['seed']))
    with threadpool_limits(1), warnings.catch_warnings():  # one BLAS thread: fits this small crawl on two of a busy machine
        warnings.filterwarnings('ignore', category=UserWarning)  # a fold that lacks a rare class
        search.fit(Xt, yt)
    err = float((search.predict(Xv) != yv).mean())
    return learn, err, dict(C=float(search.best_params_['logisticregression__C']), features=Xt.shape[1])

def lr_rule(pick):
    "A `suggest_lr` that takes another suggestion of the finder"
    def suggest_lr(learn, show_plot=False):
        with learn.no_logging(), learn.no_bar():
            sug = learn.lr_find(num_it=max(30, min(100, len(learn.dls.train))), show_plot=False, suggest_funcs=(minimum, valley))
        return float(min(max(pick(sug), 1e-4), 1e-2))
    return suggest_lr

torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS') or os.cpu_count()))
r = args['recipe']
t0 = time.perf_counter()
clock = Clock(t0)
extra = {}
if r == 'tutorial':
    set_seed(args['seed'], reproducible=True)
    dls = image_dls(args['data'], seed=args['seed'], bs=64, item_tfms=RandomResizedCrop(224, min_scale=0.5),
                    batch_tfms=aug_transforms())
    learn = T.make_learner(dls, args['arch'], out=args['out'], train_bn=True, cbs=[])  # fastai's own defaults
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(4, cbs=[clock])  # the clock sees the training only
elif r == 'probe':
    learn, err, extra = probe(args)
else:
    kw = {}
    spec = {'finetune': "imgclf:recipe='fine_tune'", 'imgclf-nocache': "imgclf:recipe='fine_tune',cache=False",
            'imgclf-224': "imgclf:recipe='fine_tune',size=224"}.get(r, r)  # named shorthands
    if spec == 'imgclf-tenth': T.suggest_lr, kw['recipe'] = lr_rule(lambda s: s.minimum), 'fine_tune'
    elif spec == 'imgclf-valley': T.suggest_lr, kw['recipe'] = lr_rule(lambda s: s.valley), 'fine_tune'
    elif spec.startswith('imgclf:'):  # imgclf:name=value,...: train_classifier's own arguments
        import ast
        for kv in spec[len('imgclf:'):].split(','):
            k, v = kv.split('=')
            kw[k] = ast.literal_eval(v)
    elif spec != 'imgclf': sys.exit(f'unknown recipe {r}')
    learn = T.train_classifier(args['data'], arch=args['arch'], seed=args['seed'], out=args['out'], quiet=True,
                               cbs=[clock] if kw.get('recipe') == 'fine_tune' else None, **kw)  # the linear recipe has no epochs
secs = time.perf_counter() - t0
if r != 'probe': err = valid_error(learn)  # after the clock stops: the model as trained, on the whole validation set
def own_peak_mb():
    "This process's own peak resident memory, VmHWM (ru_maxrss would include the parent's, inherited when it started)"
    with open('/proc/self/status') as f:
        for l in f:
            if l.startswith('VmHWM:'): return int(l.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: the upper bound
print(json.dumps(dict(recipe=r, seconds=secs, error=err, epochs=clock.log, valid=len(learn.dls.valid_ds),
                      peak_mb=own_peak_mb(), **extra)))
'''

RECIPES = ['tutorial', 'probe', 'imgclf', 'finetune', 'imgclf-nocache', 'imgclf-tenth', 'imgclf-valley', 'imgclf-224']


def run(recipe, data, seed, arch):
    "One training in its own process with a fresh IMGCLF_HOME; its result as a dict"
    with tempfile.TemporaryDirectory() as home:
        out = subprocess.run([sys.executable, '-c', CHILD, json.dumps(dict(recipe=recipe, data=str(data), arch=arch, seed=seed,
                              out=f'{home}/run'))], capture_output=True, text=True, env={**os.environ, 'IMGCLF_HOME': home})
    if out.returncode: sys.exit(f'{recipe} on {data} (seed {seed}) failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def epoch_seconds(r):
    "Mean seconds of the whole-network epochs (every epoch after the first, which trains the head alone)"
    t = [s for s, _ in r['epochs'] if s <= r['seconds']]  # runs kept before the fix logged the final `validate` too
    d = [b - a for a, b in zip(t, t[1:])]
    return statistics.mean(d) if d else float('nan')


BASES = ('tutorial', 'probe')  # the arms every other recipe is compared with, seed by seed


def summary(name, runs, recipes):
    "Print mean and spread per recipe, the time ratio against the tutorials' recipe, and paired differences in error"
    def ms(xs): return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)
    seeds = [x['seed'] for x in runs[recipes[0]]]
    valid = runs[recipes[0]][0]['valid']
    print(f'\n{name}: {len(seeds)} seed(s), {valid} validation photos (one photo = {100/valid:.2f} points)')
    print(f'{"recipe":>15}  {"error mean ± sd":>16}  {"time s mean ± sd":>17}  {"s/epoch":>8}  {"peak MB":>8}  {"time/tutorial":>13}')
    base = runs.get('tutorial')
    for r in recipes:
        e, es = ms([x['error'] for x in runs[r]]); s, ss = ms([x['seconds'] for x in runs[r]])
        ep = statistics.mean(epoch_seconds(x) for x in runs[r]); mb = max(x['peak_mb'] for x in runs[r])
        line = f'{r:>15}  {e:9.2%} ± {es:5.2%}  {s:8.1f} ± {ss:6.1f}  {"-" if ep != ep else f"{ep:8.1f}":>8}  {mb:8.0f}'
        if base: line += f'  {s/statistics.mean(x["seconds"] for x in base):13.2f}'
        print(line, flush=True)
    pairs = [(r, b) for r in recipes for b in BASES if b in runs and r != b and (r, b) != ('tutorial', 'probe')]
    if not pairs: return
    err = {r: {x['seed']: x['error'] for x in runs[r]} for r in recipes}
    print(f'paired differences in error, points (the same split in each column):')
    print(f'{"":>26}' + ''.join(f'{f"seed {k}":>9}' for k in seeds) + f'  {"mean ± sd":>14}')
    for r, b in pairs:
        d = [100 * (err[r][k] - err[b][k]) for k in seeds]
        m, sd = ms(d)
        print(f'{f"{r} - {b}":>26}' + ''.join(f'{x:+9.2f}' for x in d) + f'  {m:+6.2f} ± {sd:5.2f}', flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('folders', nargs='*', help='more datasets: folders of class folders')
    p.add_argument('--flowers', action='store_true', help='add the 2,000 TensorFlow flower photos ($IMGCLF_FLOWERS or /work/shared/data/flowers)')
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3, 4, 5])
    p.add_argument('--recipes', nargs='+', default=None,
                   help=f'any of {RECIPES}, or imgclf:NAME=VALUE,... for `train_classifier` arguments (imgclf:recipe=\'fine_tune\',epochs=6); default tutorial probe imgclf '
                        '(with --summary: every recipe in the file)')
    p.add_argument('--arch', default='efficientnet_lite0')
    p.add_argument('--no-builtin', action='store_true', help='leave out the built-in photos')
    p.add_argument('--json', help='append every run to this JSON-lines file')
    p.add_argument('--summary', metavar='JSON', help='train nothing: print the summary of the runs kept in this JSON-lines file')
    a = p.parse_args()
    if a.summary:  # e.g. seeds run one invocation at a time, into one file
        rows = [json.loads(l) for l in open(a.summary) if l.strip()]
        for name in dict.fromkeys(r['dataset'] for r in rows):
            mine = [r for r in rows if r['dataset'] == name]
            recipes = [r for r in dict.fromkeys(x['recipe'] for x in mine) if a.recipes is None or r in a.recipes]
            seeds = sorted(set.intersection(*({x['seed'] for x in mine if x['recipe'] == r} for r in recipes)))
            runs = {r: sorted((x for x in mine if x['recipe'] == r and x['seed'] in seeds), key=lambda x: x['seed']) for r in recipes}
            summary(f'{name}, seeds {seeds}', runs, recipes)
        return
    a.recipes = a.recipes or ['tutorial', 'probe', 'imgclf']
    sets = []
    if not a.no_builtin:
        from imgclf.photos import flower_photos
        sets.append(('built-in flower photos', flower_photos(Path(tempfile.mkdtemp())/'flowers')))
    if a.flowers:
        f = Path(os.environ.get('IMGCLF_FLOWERS', '/work/shared/data/flowers'))
        if f.is_dir(): sets.append(('TensorFlow flowers', f))
        else: print(f'--flowers: {f} not found, left out')
    sets += [(str(f), Path(f)) for f in a.folders]
    print(f'{len(sets)} dataset(s), recipes {", ".join(a.recipes)}, seeds {a.seeds}, backbone {a.arch}, '
          f'{os.cpu_count()} CPU cores, OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS", "unset")}', flush=True)
    for name, data in sets:
        runs = {r: [] for r in a.recipes}
        for seed in a.seeds:
            for r in a.recipes:
                res = dict(run(r, data, seed, a.arch), seed=seed, dataset=name)
                runs[r].append(res)
                print(f'  {name} seed {seed} {r:>15}: error {res["error"]:.2%}  {res["seconds"]:.1f} s'
                      + (f'  (C {res["C"]:.3g}, {res["features"]} features)' if 'C' in res else '')
                      + (f'  ({len(res["epochs"])} epochs logged, the last at {res["epochs"][-1][1]:.2%})' if res['epochs'] else ''), flush=True)
                if a.json:
                    with open(a.json, 'a') as f: f.write(json.dumps(res) + '\n')
        summary(name, runs, a.recipes)


if __name__ == '__main__': main()
