"""Benchmark: how well three orderings put label errors and stray pictures in front of the person cleaning.

For each dataset (default: the built-in flower photos; `--data` adds any folder of class folders), this makes a
noisy copy: a seeded 10% of the pictures moved to another class ("flipped"), and 5% pictures that belong to no
class ("planted": crops of scikit-image's sample photos and its LFW faces, given random classes). Then, in one run:

  (a) fastai's cleaner order: train with imgclf's default recipe, rank every picture by its loss as
      `ImageClassifierCleaner` computes it (training pictures with the training augmentations on);
  (b) a plain baseline: frozen-backbone features, 5-fold logistic regression, ranked by 1 - p(given label);
  (c) imgclf's `rank_suspects`.

For each: the share of flipped and of planted pictures in the top 15%, the precision of the top k (k = number
of flipped + planted pictures: the share of the first k that are one or the other), and the time it took from
the files on disk (nothing cached). The time of (a) includes one default training run (`train_classifier`),
which is also printed alone: imgclf's ranking should take no longer. For (b) and (c) it also prints the most flipped
pictures any order built on their probabilities could put in the top 15% while 90% of the planted are there too
(strays placed perfectly, the rest by least probability of the given label): an order that falls short of it can
be improved by ordering better; one at it, only by better probabilities.

Then the dataset is cleaned by accepting imgclf's suggestions in its top k, in two ways: relabel every picture
with a suggested class and delete the rest (not any class); or relabel only when the models give the suggested
class at least 70% and delete the rest (a wrong relabel adds a wrong label; a deletion only loses a picture). Each
is retrained with the default recipe; its error is printed beside the error of the same recipe on the
noisy data and on the data before noise was added (all three on the same held-out pictures, judged by their
true labels; held-out pictures are never trained on). One training's error moves by a point or more with its
seed alone (on the flowers, the clean data gave 7.3%, 9.3% and 9.1% for seeds 42, 43 and 44), so every training
set is trained `--repeats` times (seeds 42, 43, ...) and the means are compared.

    python bench/bench_clean.py                                # the built-in photos
    python bench/bench_clean.py --data ../shared/data/flowers  # and any other folder of class folders
    python bench/bench_clean.py --no-builtin --data DIR        # only DIR
    python bench/bench_clean.py --no-builtin --data ../shared/data/flowers --exclude bench/flowers_source_errors.txt
    python bench/bench_clean.py --repeats 0                    # the rankings, without the retrainings

`--exclude LIST` leaves the pictures listed (one `class/file` per line, relative to each dataset; `#` comments)
out of the source before noise is added: real errors of the source, which the benchmark would otherwise count as
clean pictures ranked too high. `bench/flowers_source_errors.txt` lists 17 such pictures of the flowers.
"""
import argparse, os, shutil, sys, tempfile, time, warnings
from pathlib import Path
import numpy as np
from imgclf.cleaner import SURE  # the cleaner's "Accept sure ones": a wrong relabel adds a wrong label, a deletion only loses one picture
warnings.filterwarnings('ignore')


def strays(dest:Path, n:int, seed:int):
    "`n` pictures of no flower and no class of ours: crops of scikit-image's sample photos and its LFW faces"
    from PIL import Image
    from skimage import data as sk
    rng = np.random.default_rng(seed)
    srcs = [sk.astronaut(), sk.coffee(), sk.chelsea(), sk.rocket(), sk.camera(), sk.moon(), sk.brick(), sk.grass(), sk.gravel(),
            sk.cell(), sk.coins(), sk.horse(), sk.page(), sk.text(), sk.clock(), sk.immunohistochemistry(), sk.hubble_deep_field(),
            sk.logo()[..., :3], sk.retina(), sk.colorwheel()]
    faces = sk.lfw_subset()[:100]
    out = []
    for i in range(n):
        if i % 5 < 3:
            a = srcs[int(rng.integers(len(srcs)))]
            a = (a * 255).astype(np.uint8) if a.dtype != np.uint8 else a
            if a.ndim == 2: a = np.stack([a] * 3, -1)
            h, w = a.shape[:2]; s = int(min(h, w) * rng.uniform(0.4, 1)); y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            im = Image.fromarray(a[y:y + s, x:x + s])
        else: im = Image.fromarray((faces[int(rng.integers(100))] * 255).astype(np.uint8)).convert('RGB')
        f = dest/f'stray_{i:04d}.jpg'; im.resize((224, 224)).save(f, quality=90); out.append(f)
    return out


def noisy_copy(src:Path, dest:Path, seed:int, flip:float=0.1, plant:float=0.05):
    "Copy `src` to `dest` with `flip` of its pictures in a wrong class and `plant` stray pictures; return the truth"
    from imgclf.core import scan_dataset
    rep = scan_dataset(src, check=False)
    files, vocab = rep.items, rep.vocab
    rng = np.random.default_rng(seed)
    flipped = set(rng.choice(len(files), int(len(files) * flip), replace=False).tolist())
    truth = {}
    for i, f in enumerate(files):
        c = f.relative_to(src).parts[0]
        new = c if i not in flipped else vocab[(vocab.index(c) + int(rng.integers(1, len(vocab)))) % len(vocab)]
        (dest/new).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest/new/f.name)
        truth[f'{new}/{f.name}'] = ('flipped' if i in flipped else 'clean', c)
    tmp = dest.parent/'strays'; tmp.mkdir(exist_ok=True)
    for f in strays(tmp, int(len(files) * plant), seed):
        c = vocab[int(rng.integers(len(vocab)))]
        shutil.move(f, dest/c/f.name); truth[f'{c}/{f.name}'] = ('planted', None)
    return truth


def measure(name, order, truth, secs):
    "Share of flipped and planted in the top 15%, precision at k, for a list of files most suspect first"
    n, bad = len(order), {f for f, (k, _) in truth.items() if k != 'clean'}
    top, topk = set(order[:int(0.15 * n)]), order[:len(bad)]
    share = lambda kind: np.mean([f in top for f, (k, _) in truth.items() if k == kind])
    r = dict(name=name, flipped=share('flipped'), planted=share('planted'), precision=np.mean([f in bad for f in topk]), secs=secs)
    print(f"  {name:34s} flipped in top 15%: {r['flipped']:6.1%}   planted: {r['planted']:6.1%}   "
          f"precision at k={len(bad)}: {r['precision']:6.1%}   {secs:6.1f} s", flush=True)
    return r


def ceiling(name, files, p_label, truth, planted=0.9):
    """The most flipped pictures any order built on these probabilities could put in the top 15% while `planted` of
    the planted ones are there too: those planted first (as if strays were found perfectly), then the rest by
    least probability of the given label. An order can only beat this with better probabilities."""
    w = int(0.15 * len(files))
    kinds = np.array([truth[f][0] for f in files]); p_label = np.asarray(p_label)
    need = int(np.ceil(planted * (kinds == 'planted').sum()))
    rest = np.where(kinds != 'planted')[0]
    rest = rest[np.argsort(p_label[rest], kind='stable')][:max(w - need, 0)]
    share = (kinds[rest] == 'flipped').sum() / max((kinds == 'flipped').sum(), 1)
    print(f"  {name:34s} at most {share:6.1%} of the flipped in the top 15% with {planted:.0%} of the planted there", flush=True)
    return share


def fastai_order(path:Path):
    "Train with imgclf's recipe; every picture by its loss as fastai's ImageClassifierCleaner computes it; and the training's seconds"
    from imgclf.train import train_classifier
    t = time.perf_counter()
    learn = train_classifier(path, quiet=True)
    train_secs = time.perf_counter() - t
    losses = []
    for i, dl in enumerate([learn.dls.train, learn.dls.valid]):
        with learn.no_bar(): _, _, l = learn.get_preds(ds_idx=i, with_loss=True)  # the cleaner's call: ds_idx 0 keeps the training augmentations
        losses += [(float(v), Path(f).relative_to(path).as_posix()) for v, f in zip(l, learn.dls[i].items)]
    return [f for _, f in sorted(losses, reverse=True)], train_secs


def baseline_order(path:Path):
    "Frozen features, 5-fold logistic regression, most suspect = least probability of the given label; and that probability of each file"
    from imgclf.core import scan_dataset
    from imgclf.rank import embed_images, oof_probs, l2_normalize
    rep = scan_dataset(path, check=False)
    y = np.array([rep.vocab.index(f.relative_to(path).parts[0]) for f in rep.items])
    F = embed_images(rep.items, size=224, levels=False, progress=False, cache=False)[0]  # the last layer's features alone
    P = oof_probs(l2_normalize(F), y, len(rep.vocab), folds=5, c_n=5000)
    p = P[np.arange(len(y)), y]
    rel = [f.relative_to(path).as_posix() for f in rep.items]
    return [rel[i] for i in np.argsort(p, kind='stable')], dict(zip(rel, p))


def error_on(learn, valid_files:list, truth_class:dict):
    "Error of `learn` on `valid_files`, judged against their true classes"
    from imgclf.export import predict_images
    preds = predict_images(learn, valid_files)
    return float(np.mean([p.label != truth_class[f.name] for p, f in zip(preds, valid_files)]))


POLICY = {'all': 'relabelling every suggestion', 'sure': f'relabelling when the suggestion has >= {SURE:.0%}, else deleting'}

def run(src:Path, work:Path, seed:int, repeats:int=3, name:str|None=None):
    from imgclf.rank import rank_suspects
    from imgclf.train import train_classifier
    from imgclf.changes import apply_changes
    noisy = work/'noisy'
    truth = noisy_copy(src, noisy, seed)
    n = len(truth); kinds = [k for k, _ in truth.values()]
    print(f'\n{name or src}: {n} pictures, {kinds.count("flipped")} flipped, {kinds.count("planted")} planted (seed {seed})', flush=True)
    res = []
    t = time.perf_counter(); o, train_secs = fastai_order(noisy); res.append(measure("(a) fastai's cleaner order (loss)", o, truth, time.perf_counter() - t))
    t = time.perf_counter(); o, p_base = baseline_order(noisy); res.append(measure('(b) baseline: features + 5-fold LR', o, truth, time.perf_counter() - t))
    t = time.perf_counter(); r = rank_suspects(noisy, progress=False); res.append(measure('(c) imgclf rank_suspects', list(r.file), truth, time.perf_counter() - t))
    best = {k: max(res[:2], key=lambda x: x[k])[k] for k in ('flipped', 'planted', 'precision')}
    print('  imgclf above both: ' + ', '.join(f'{k} {"yes" if res[2][k] > best[k] else "no"}' for k in best))
    print(f'  one default training run: {train_secs:.1f} s; imgclf\'s ranking took {res[2]["secs"] / train_secs:.2f} of it', flush=True)
    print('  the probabilities behind (b) and (c), whatever the order built on them:')
    ceiling('(b) baseline probabilities', list(r.file), [p_base[f] for f in r.file], truth)
    ceiling('(c) imgclf probabilities', list(r.file), list(r.p_label), truth)
    if repeats < 1: return res  # the rankings alone
    # clean with imgclf's suggestions in its top k, two ways: (all) relabel every picture that has a suggested class,
    # delete the rest; (sure) relabel only when the models give the suggested class at least SURE, delete the rest
    k = sum(1 for v in kinds if v != 'clean')
    top = r.head(k)
    policies = {'all': top.suggested != '', 'sure': (top.suggested != '') & (top.p_suggested >= SURE)}
    # the same held-out pictures for every training: clean originals, judged by their true class
    from imgclf.core import scan_dataset
    orig = scan_dataset(src, check=False).items
    vrng = np.random.default_rng(seed + 1)
    valid = [orig[i] for i in sorted(vrng.choice(len(orig), len(orig) // 5, replace=False))]
    true_class = {f.name: f.parent.name for f in orig}
    vnames = {f.name for f in valid}
    def errors(folder, name):
        "Errors on the held-out pictures of `repeats` default trainings on `folder` without them"
        d = work/name
        for f in folder.glob('*/*'):
            if f.is_file() and f.name not in vnames and not f.name.startswith('.'):
                (d/f.parent.name).mkdir(parents=True, exist_ok=True); shutil.copyfile(f, d/f.parent.name/f.name)
        return np.array([error_on(train_classifier(d, quiet=True, valid_pct=0.1, seed=42 + i), valid, true_class) for i in range(repeats)])
    show = lambda e: f'{e.mean():.2%}' + (' (' + ', '.join(f'{v:.2%}' for v in e) + ')' if len(e) > 1 else '')
    e_dirty = errors(noisy, 'noisy_train')
    e_clean = errors(src, 'clean_train')
    print(f'  error on {len(valid)} held-out pictures, mean of {repeats} training(s) each: on the noisy data {show(e_dirty)}; '
          f'on the data before noise {show(e_clean)}', flush=True)
    for name, relabel in policies.items():
        d = work/f'cleaned_{name}'; shutil.copytree(noisy, d)
        apply_changes(d, deletes=[d/f for f in top.file[~relabel]], relabels=[(d/f, c) for f, c in zip(top.file[relabel], top.suggested[relabel])])
        e = errors(d, f'cleaned_{name}_train')
        print(f'  after one cleaning pass, {POLICY[name]} ({relabel.sum()} relabelled, {(~relabel).sum()} deleted): {show(e)}; '
              f'cleaned - clean: {100 * (e.mean() - e_clean.mean()):+.2f} points', flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--data', type=Path, action='append', default=[], help='a folder of class folders (repeat for more)')
    ap.add_argument('--no-builtin', action='store_true', help='leave out the built-in flower photos')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--repeats', type=int, default=3, help='trainings per retraining arm, averaged (default %(default)s; 0: the rankings alone)')
    ap.add_argument('--exclude', type=Path, help='a list of class/file pictures to leave out of every dataset first (source errors)')
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix='bench-clean-'))
    os.environ['IMGCLF_HOME'] = str(work/'home')  # always a fresh home: no features cached by an earlier run, as the timings claim
    print(f'machine: {os.cpu_count()} CPU cores, Python {sys.version.split()[0]}')
    sets = list(a.data)
    names = [str(d) for d in sets]
    if not a.no_builtin:
        from imgclf.photos import flower_photos, planted_problems
        b = flower_photos(work/'builtin')
        for f, problem, true in zip(*(planted_problems()[c] for c in ('file', 'problem', 'true_class'))):
            if problem == 'wrong class': shutil.move(b/f, b/true/Path(f).name)  # start from the corrected set
            else: (b/f).unlink()
        sets.insert(0, b); names.insert(0, 'built-in flower photos (its planted problems put right)')
    if a.exclude:
        drop = {l.split()[0] for l in a.exclude.read_text().splitlines() if l.strip() and not l.startswith('#')}
        for i, d in enumerate(sets):
            d = Path(d); gone = [f for f in drop if (d/f).is_file()]
            if not gone: continue
            sets[i] = work/f'source{i}'
            shutil.copytree(d, sets[i], ignore=lambda folder, names: [n for n in names if (Path(folder)/n).relative_to(d).as_posix() in drop])
            print(f'{names[i]}: {len(gone)} picture(s) listed in {a.exclude} left out')
            names[i] += f' less {len(gone)} listed in {a.exclude}'
    try:
        for i, d in enumerate(sets): run(Path(d), work/f'set{i}', a.seed, a.repeats, names[i])
    finally: shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__': main()
